"""Foreign weights files: safetensors always load, pickles only when trusted, whatever their first byte."""

import pickle

import pytest
import torch
from confidently.errors import InvalidInput
from confidently.models.convert import read_foreign_weights

from tests.io.safetensors_bytes import padded_safetensors


@pytest.mark.parametrize("header_length", [0x180, 0x280])  # starts 0x80 0x01 / 0x80 0x02 (a pickle's PROTO 2)
def test_safetensors_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path, header_length):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(padded_safetensors(header_length, {"weight": torch.arange(6.0).reshape(2, 3)}))
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(read_foreign_weights(path)["weight"], torch.arange(6.0).reshape(2, 3))


def test_pickles_still_need_trust(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(InvalidInput, match="is a pickle"):
        read_foreign_weights(path)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_number_of_classes_comes_from_the_architectures_classifier_whatever_the_key_order(prefix):
    """Safetensors headers are unordered: the head may come first, a 2-D block weight last."""
    from confidently.models import create_model
    from confidently.models.convert import classifier_width

    state = create_model("tiny_vit", 3).net.state_dict()
    shuffled = {f"{prefix}head.weight": state["head.weight"]}
    shuffled.update({f"{prefix}{k}": v for k, v in state.items() if k != "head.weight"})
    last_2d = [v for v in shuffled.values() if v.ndim == 2][-1]
    assert last_2d.shape[0] != 3  # what a "last 2-D weight" guess would have read
    assert classifier_width(shuffled, "tiny_vit") == 3
    assert classifier_width({"blocks.0.attn.qkv.weight": torch.zeros(6, 2)}, "tiny_vit") is None
