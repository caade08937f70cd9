import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.io.images import save_image
from safetensors.torch import save_file


def make_folder(root, classes=("cat", "dog"), per_class=3):
    for name in classes:
        for i in range(per_class):
            save_image(torch.rand(3, 8, 8), root / name / f"{i}.png")


def test_image_folder_layout(tmp_path):
    make_folder(tmp_path / "data")
    data = open_dataset(tmp_path / "data")
    assert data.classes == ["cat", "dog"] and len(data) == 6
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data[4][0].shape == (3, 8, 8)


def test_image_folder_split_subfolders(tmp_path):
    make_folder(tmp_path / "data" / "train")
    make_folder(tmp_path / "data" / "test", per_class=1)
    assert len(open_dataset(tmp_path / "data", "test")) == 2
    with pytest.raises(InvalidInput, match="no 'val' subfolder"):
        open_dataset(tmp_path / "data", "val")


def test_an_imagenet_layout_is_splits_of_one_class_list(tmp_path):
    """ROOT/train and ROOT/val are splits, not two classes: labels agree between them (the union of their
    class folders), and every record says its split and has the id it has in the whole folder."""
    make_folder(tmp_path / "data" / "train", classes=("cat", "dog", "eel"), per_class=2)
    make_folder(tmp_path / "data" / "val", classes=("dog", "eel"), per_class=1)
    val = open_dataset(tmp_path / "data", "val")
    assert val.classes == ["cat", "dog", "eel"] and val.labels.tolist() == [1, 2] and val.ids[0] == "val/dog/0.png"
    whole = open_dataset(tmp_path / "data")
    assert whole.classes == val.classes and len(whole) == 8
    assert [r.data["split"] for r in whole.records] == ["train"] * 6 + ["val"] * 2
    assert whole.ids[-1] == "val/eel/0.png" and whole.image(7).shape == (3, 8, 8)
    assert open_dataset(tmp_path / "data" / "train").classes == ["cat", "dog", "eel"]  # a plain class folder


def test_manifest_relative_to_its_folder_and_split_filter(tmp_path):
    make_folder(tmp_path / "d")
    lines = [{"id": f"r{i}", "image": f"cat/{i}.png", "label": 0, "split": "train" if i else "test"} for i in range(3)]
    (tmp_path / "d" / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    data = open_dataset(tmp_path / "d" / "m.jsonl", "train")
    assert data.ids == ["r1", "r2"]
    assert data.image(0).shape == (3, 8, 8)


def test_manifest_bad_image_names_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id":"a","image":"a.png"}\n{"id":"b","image":"gone.png"}\n')
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    data = open_dataset(tmp_path / "m.jsonl")
    with pytest.raises(InvalidInput) as info:
        data.image(1)
    assert info.value.line == 2 and info.value.field == "image"


def test_shard_source(tmp_path):
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    meta = artifact_metadata(tool="dataset", kind="shard", classes=["a", "b"])
    save_artifact(tmp_path / "s.safetensors", {"images": images, "labels": torch.tensor([0, 1, 1, 0])}, meta)
    data = open_dataset(tmp_path / "s.safetensors")
    assert data.classes == ["a", "b"] and data.labels.tolist() == [0, 1, 1, 0]
    assert torch.equal(collect(data)[0], images.float() / 255)
    assert data.records[2].data["image"] == {"tensors": str(tmp_path / "s.safetensors"), "key": "images", "index": 2}


def test_shard_needs_images(tmp_path):
    save_file({"pixels": torch.zeros(2, 3, 4, 4)}, tmp_path / "s.safetensors")
    with pytest.raises(InvalidInput, match="no 'images'"):
        open_dataset(tmp_path / "s.safetensors")


def test_label_outside_classes(tmp_path):
    make_folder(tmp_path / "d", classes=("a",), per_class=1)
    (tmp_path / "m.jsonl").write_text('{"id":"x","image":"d/a/0.png","label":4,"class_name":"z"}\n'
                                      '{"id":"y","image":"d/a/0.png","label":0,"class_name":"a"}\n')
    assert open_dataset(tmp_path / "m.jsonl").classes == ["a", "1", "2", "3", "z"]
    with pytest.raises(InvalidInput, match="outside the 2 classes"):
        open_dataset(tmp_path / "m.jsonl", classes=["a", "b"])


def test_missing_source_is_a_usage_error():
    """A --data file that is not there is a mistake on the command line (exit 2), like every tool's FILE."""
    with pytest.raises(UsageError, match="dataset not found"):
        open_dataset("no/such/thing.jsonl")


def test_manifest_bad_lines_go_to_on_invalid(tmp_path):
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_bytes(b'{"id":"a","image":"a.png"}\n\xff\xfe\n{"id":"c","image":"a.png"}\n')
    with pytest.raises(InvalidInput) as info:
        open_dataset(tmp_path / "m.jsonl")
    assert info.value.line == 2 and "UTF-8" in info.value.message
    invalid = []
    data = open_dataset(tmp_path / "m.jsonl", on_invalid=invalid.append)
    assert data.ids == ["a", "c"] and [error.line for error in invalid] == [2]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_float_shard_row_is_refused_when_read(tmp_path, value):
    images = torch.rand(2, 3, 4, 4)
    images[1, 0, 0, 0] = value
    save_artifact(tmp_path / "s.safetensors", {"images": images}, artifact_metadata(tool="dataset", kind="shard"))
    shard = open_dataset(tmp_path / "s.safetensors")  # memory-mapped: rows are checked as they are read
    assert torch.equal(shard.image(0), images[0])
    with pytest.raises(InvalidInput, match="NaN or infinite") as info:
        shard.image(1)
    assert info.value.record_id == "s-1"


def test_info_hands_undecodable_images_to_on_invalid(tmp_path):
    save_image(torch.rand(3, 4, 4), tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text('{"id":"a","image":"a.png"}\n{"id":"b","image":"gone.png"}\n')
    invalid = []
    info = open_dataset(tmp_path / "m.jsonl").info(on_invalid=invalid.append)
    assert info["shapes"] == [{"shape": [3, 4, 4], "count": 1}] and invalid[0].line == 2


def test_subset_and_fingerprint():
    data = open_dataset("demo:digits", "test")
    part = data.subset([0, 5, 9])
    assert part.ids == [data.ids[i] for i in (0, 5, 9)]
    assert torch.equal(collect(part)[0][1], collect(data)[0][5])
    assert part.fingerprint() != data.fingerprint() and part.fingerprint() == data.subset([0, 5, 9]).fingerprint()
