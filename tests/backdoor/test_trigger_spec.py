"""Trigger specs from options or files: what records carry must stamp the same pixels from any folder."""

import json

import pytest
import torch
from confidently.backdoor import build_trigger_spec, save_trigger
from confidently.data.triggers import make_stamp
from confidently.errors import InvalidInput, UsageError


def test_options_left_out_take_the_default_and_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_trigger_spec("square", size=4, color="0,1,0.5") == {"type": "square", "size": 4,
                                                                     "color": [0.0, 1.0, 0.5]}
    sticker = build_trigger_spec("sticker", image=tmp_path.joinpath("s.png").relative_to(tmp_path))
    assert sticker == {"type": "sticker", "image": str(tmp_path / "s.png")}


def test_bad_options_name_the_argument():
    with pytest.raises(UsageError, match="`trigger` 'hat'"):
        build_trigger_spec("hat")
    with pytest.raises(UsageError, match="`color` '1,x'"):
        build_trigger_spec("square", color="1,x")


def test_a_saved_trigger_file_stamps_what_its_spec_stamps(tmp_path, monkeypatch):
    spec = {"type": "square", "size": 3, "pos": "2,1", "color": [0.0, 1.0, 0.0]}
    save_trigger(tmp_path / "t.safetensors", spec, (3, 10, 10))
    monkeypatch.chdir(tmp_path)
    by_file = build_trigger_spec(trigger_file=tmp_path.joinpath("t.safetensors").relative_to(tmp_path))
    assert by_file == {"type": "file", "path": str(tmp_path / "t.safetensors")}
    images = torch.rand(2, 3, 10, 10)
    assert torch.equal(make_stamp(by_file, (3, 10, 10))(images), make_stamp(spec, (3, 10, 10))(images))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert build_trigger_spec("gaussian", trigger_file=tmp_path / "spec.json") == spec
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidInput, match="trigger_file"):
        build_trigger_spec(trigger_file=tmp_path / "bad.json")
