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


def test_artifact_rows_read_one_row_and_survive_pickling(tmp_path):
    from confidently.io.artifacts import ArtifactRows

    maps = torch.arange(5 * 4 * 3, dtype=torch.int32).reshape(5, 4, 3)
    save_artifact(tmp_path / "s.safetensors", {"segments": maps}, artifact_metadata(tool="t", kind="segments",
                                                                                   ids=list("abcde")))
    rows = ArtifactRows(tmp_path / "s.safetensors")
    assert rows.shapes == {"segments": (5, 4, 3)} and rows.meta["ids"] == list("abcde")
    assert torch.equal(rows.row("segments", 3), maps[3])
    copy = pickle.loads(pickle.dumps(rows))  # a data-loader worker reopens the file itself
    assert torch.equal(copy.row("segments", 4), maps[4])
    (tmp_path / "bad.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}")
    with pytest.raises(InvalidInput):
        ArtifactRows(tmp_path / "bad.safetensors")
