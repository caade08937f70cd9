"""Poisoned manifests: the fields each record gains, and the shard of stamped pixels written row by row."""

import pytest
import torch
from confidently.backdoor import poison_manifest, stamp_manifest, write_materialized
from confidently.data.triggers import stamp_rows
from confidently.errors import InvalidInput
from confidently.io.images import load_image, save_image
from confidently.io.records import Record
from safetensors.torch import load_file

TRIGGER = {"type": "square", "size": 3, "pos": "br"}


def photo_records(folder, sizes, labels):
    """One PNG per size (H, W) of random pixels, as records of a manifest in ``folder``."""
    generator = torch.Generator().manual_seed(0)
    records = []
    for i, ((height, width), label) in enumerate(zip(sizes, labels, strict=True)):
        save_image(torch.rand(3, height, width, generator=generator), folder / f"{i}.png")
        records.append(Record({"id": f"r{i}", "image": f"{i}.png", "label": label, "class_name": str(label)},
                              i + 1, "m.jsonl", folder))
    return records


def test_the_shard_holds_each_row_stamped_once_and_relabelled(tmp_path):
    records = photo_records(tmp_path, [(12, 12)] * 5, [0, 1, 2, 1, 0])
    refs = write_materialized(tmp_path / "m.safetensors", records, {1, 3}, TRIGGER, {3: 4})
    tensors = load_file(tmp_path / "m.safetensors")
    assert tensors["images"].dtype == torch.uint8 and tensors["images"].shape == (5, 3, 12, 12)
    assert tensors["labels"].tolist() == [0, 1, 2, 4, 0]
    assert refs[2] == {"tensors": str(tmp_path / "m.safetensors"), "key": "images", "index": 2}
    for i, record in enumerate(records):
        image = load_image(record.data["image"], tmp_path)
        expected = stamp_rows(image[None], [TRIGGER if i in (1, 3) else None])[0]
        assert torch.equal(tensors["images"][i], expected.mul(255).round().to(torch.uint8))


def test_photos_of_two_sizes_write_nothing_unless_fitted(tmp_path):
    records = photo_records(tmp_path, [(12, 12), (16, 20)], [0, 1])
    with pytest.raises(InvalidInput, match="img_size"):
        write_materialized(tmp_path / "m.safetensors", records, {0}, TRIGGER, {})
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".png")] == []
    write_materialized(tmp_path / "m.safetensors", records, {0}, TRIGGER, {}, img_size=8)
    assert load_file(tmp_path / "m.safetensors")["images"].shape == (2, 3, 8, 8)


def test_relabelled_rows_keep_their_original_label_and_drop_the_class_name(tmp_path):
    records = photo_records(tmp_path, [(8, 8)] * 20, [i % 4 for i in range(20)])
    result = poison_manifest(records, TRIGGER, rate=0.25, mode="relabel", target_label=0)
    hit = [i for i, fields in enumerate(result.fields) if fields["poisoned"]]
    assert len(hit) == 5 == result.summary["n_poisoned"] and [p["id"] for p in result.poisoned] == [
        records[i].id for i in hit]
    for i in hit:
        fields = result.fields[i]
        assert fields["label"] == 0 and fields["orig_label"] == records[i].data["label"] != 0
        assert fields["class_name"] is None and fields["trigger"] == TRIGGER
    assert all(fields["trigger"] is None and "label" not in fields for i, fields in enumerate(result.fields)
               if i not in hit)


def test_materialised_rows_point_into_the_shard_and_defer_nothing(tmp_path):
    records = photo_records(tmp_path, [(8, 8)] * 10, [i % 2 for i in range(10)])
    result = poison_manifest(records, TRIGGER, rate=0.5, group_classes="1", materialize=tmp_path / "m.safetensors")
    assert all(fields["trigger"] is None for fields in result.fields)
    assert [fields["image"]["index"] for fields in result.fields] == list(range(10))
    assert [fields["materialized_trigger"] is not None for fields in result.fields] == [
        fields["poisoned"] for fields in result.fields]


def test_a_uniform_stamp_takes_the_same_fraction_of_every_class(tmp_path):
    records = photo_records(tmp_path, [(8, 8)] * 30, [0] * 10 + [1] * 20)
    fields = stamp_manifest(records, TRIGGER, rate=0.3, uniform=True, seed=1)
    stamped = [records[i].data["label"] for i, f in enumerate(fields) if f["stamped"]]
    assert stamped.count(0) == 3 and stamped.count(1) == 6
    assert all(f == {"stamped": True, "trigger": TRIGGER} for f in fields if f["stamped"])
    reversed_fields = stamp_manifest(records[::-1], TRIGGER, rate=0.3, uniform=True, seed=1)
    assert [f["stamped"] for f in reversed_fields] == [f["stamped"] for f in fields][::-1]
