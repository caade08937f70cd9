import os
import pickle

import pytest
import torch
from confidently.errors import InvalidInput
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.atomic import atomic_write
from confidently.schema import schema_errors


def test_round_trip_with_typed_metadata(tmp_path):
    meta = artifact_metadata(tool="certify", kind="votes", config={"stride": 2, "sizes": [1, 2]}, seed=7)
    save_artifact(tmp_path / "v.safetensors", {"votes": torch.arange(6).view(2, 3)}, meta)
    tensors, loaded = load_artifact(tmp_path / "v.safetensors")
    assert torch.equal(tensors["votes"], torch.arange(6).view(2, 3))
    assert loaded["config"] == {"stride": 2, "sizes": [1, 2]} and loaded["seed"] == 7
    assert schema_errors(loaded, "artifact-metadata") == []


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_pickle_is_not_an_artifact(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InvalidInput, match="safetensors"):
        load_artifact(path)
