import pickle

import pytest
import torch
from confidently.errors import InvalidInput
from confidently.io.model_files import read_model_file
from confidently.models import create_model, load_model, save_model
from confidently.schema import schema_errors
from safetensors.torch import save_file

from tests.io.safetensors_bytes import padded_safetensors


def test_model_round_trip_rebuilds_from_metadata(tmp_path):
    model = create_model("tiny_resnet", 4, classes=["a", "b", "c", "d"]).eval()
    save_model(model, tmp_path / "m.safetensors", training={"recipe": "standard", "eps": 0.0, "seed": 1})
    loaded = load_model(tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), loaded(x))
    _, meta = read_model_file(tmp_path / "m.safetensors")
    assert schema_errors(meta, "model-metadata") == []
    assert meta["classes"] == ["a", "b", "c", "d"] and meta["training"]["eps"] == 0.0


def test_normalisation_lives_in_the_model(tmp_path):
    model = create_model("tiny_resnet", 2, mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5))
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert torch.allclose(loaded.normalize.mean.flatten(), torch.tensor([0.2, 0.3, 0.4]))


@pytest.mark.parametrize("kind", ["torch_save", "raw_pickle"])
def test_pickled_checkpoints_are_refused_unloaded(tmp_path, kind, monkeypatch):
    path = tmp_path / "model.pt"
    if kind == "torch_save":
        torch.save({"weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps({"weight": [0, 0]}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(InvalidInput, match="never loads them"):
        read_model_file(path)


def test_safetensors_without_metadata_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(InvalidInput, match="not a confidently model file"):
        read_model_file(tmp_path / "bare.safetensors")


def test_truncated_model_file(tmp_path):
    model = create_model("tiny_resnet", 2)
    save_model(model, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput):
        read_model_file(tmp_path / "cut.safetensors")


@pytest.mark.parametrize("header_length", [0x2080, 0x10280])  # low byte 0x80; the second also mimics PROTO 2
def test_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path, header_length):
    from confidently.io.artifacts import encode_metadata
    from confidently.io.model_files import looks_pickled

    model = create_model("tiny_resnet", 2)
    saved = tmp_path / "m.safetensors"
    save_model(model, saved)
    tensors, metadata = read_model_file(saved)
    data = padded_safetensors(header_length, tensors, encode_metadata(metadata))
    assert data[:2] == header_length.to_bytes(8, "little")[:2] and data[0] == 0x80
    (tmp_path / "odd.safetensors").write_bytes(data)
    assert not looks_pickled(data)
    loaded, _ = read_model_file(tmp_path / "odd.safetensors")
    assert all(torch.equal(loaded[key], tensors[key]) for key in tensors)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_with_a_proto_opcode_is_recognised(protocol):
    from confidently.io.model_files import looks_pickled

    assert looks_pickled(pickle.dumps({"weight": [0, 0]}, protocol=protocol))
    assert not looks_pickled(b"\x80\x01" + bytes(30))  # 0x80 then no protocol: not a pickle's start


def test_legacy_torch_save_is_refused_unloaded(tmp_path, monkeypatch):
    path = tmp_path / "legacy.pt"
    torch.save({"weight": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(InvalidInput, match="never loads them"):
        read_model_file(path)
