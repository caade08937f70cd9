"""`pack`: bounded shards written atomically, resumed after an interruption, never over someone else's files;
safetensors packs open as one dataset; `describe` counts through the loader's workers."""

import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.pack import ImageShape, describe, fit_image, pack
from confidently.data.webdataset import open_stream
from confidently.errors import InvalidInput, UsageError

from tests.photos import make_imagenet_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_imagenet_folder(tmp_path_factory.mktemp("photos"), 1, 2, truncated=True)


def shard_times(out):
    return {path.name: path.stat().st_mtime_ns for path in out.glob("shard-*")}


def test_fit_image_keeps_the_aspect_or_crops_the_centre():
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)
    assert fit_image(image, 20, crop=False).shape == (3, 20, 30)
    assert fit_image(image, 20, crop=True).shape == (3, 20, 20)
    assert torch.equal(fit_image(image, 20, crop=True), fit_image(image, 20, crop=False)[:, :, 5:25])


def test_safetensors_pack_opens_as_one_dataset(photos, tmp_path):
    folder = open_dataset(photos, "train")
    summaries = pack(folder, tmp_path / "st", format="safetensors", size=16, crop=True, max_count=2, split="train")
    assert [s["count"] for s in summaries] == [2, 1]
    packed = open_dataset(tmp_path / "st")
    assert packed.ids == folder.ids and packed.labels.tolist() == folder.labels.tolist()
    assert packed.classes == folder.classes and {r.data["split"] for r in packed.records} == {"train"}
    for i in range(len(folder)):
        assert torch.equal(packed.raw(i), fit_image(folder.raw(i), 16, crop=True))
    assert len(open_dataset(tmp_path / "st", "train")) == 3
    assert open_dataset(tmp_path / "st" / summaries[0]["shard"]).ids == folder.ids[:2]  # each shard is a shard
    with pytest.raises(UsageError, match="--size S --crop"):  # mixed shapes do not stack
        pack(open_dataset(photos, "val"), tmp_path / "mixed", format="safetensors", on_invalid=lambda e: None)


def test_an_interrupted_pack_resumes_after_its_finished_shards(photos, tmp_path):
    """A truncated JPEG stops the run (exit 3's error, naming the file); the rerun with skipping keeps the
    finished shards untouched, goes on, and a third run is a no-op with the same summaries."""
    folder = open_dataset(photos, "val")
    out = tmp_path / "p"
    finished = []
    with pytest.raises(InvalidInput, match="truncated.JPEG"):
        pack(folder, out, max_bytes=20_000, on_shard=finished.append)
    assert finished and not list(out.glob(".*.tmp"))  # the shard in progress left nothing behind
    before = shard_times(out)
    errors = []
    summaries = pack(folder, out, max_bytes=20_000, on_invalid=errors.append)
    assert summaries[:len(finished)] == finished and {n: shard_times(out)[n] for n in before} == before
    assert len(errors) == 1 and errors[0].record_id.endswith("truncated.JPEG")
    assert sum(s["count"] for s in summaries) == len(folder) - 1
    after = shard_times(out)
    again = []
    assert pack(folder, out, max_bytes=20_000, on_invalid=again.append) == summaries and shard_times(out) == after
    assert [e.describe() for e in again] == [e.describe() for e in errors]
    sidecar = json.loads((out / "pack.json").read_text())
    assert sidecar["complete"] and sidecar["count"] == len(folder) - 1
    assert len(open_stream(out, preprocess=ImageShape())) == len(folder) - 1


def test_pack_never_writes_over_what_it_did_not_write(photos, tmp_path):
    folder = open_dataset(photos, "train")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        pack(folder, tmp_path / "mine")
    out = tmp_path / "p"
    pack(folder, out, max_count=1)
    with pytest.raises(UsageError, match="other data or settings"):  # a finished pack is not redone silently
        pack(folder, out, max_count=2)
    (out / "shard-000009.tar").write_bytes(b"a user's file")
    with pytest.raises(UsageError, match="shard-000009.tar"):
        pack(folder, out, max_count=1)
    (out / "shard-000009.tar").unlink()
    assert len(pack(folder, out, max_count=2, force=True)) == 2
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-000000.tar", "shard-000001.tar"]  # stale ones go


def test_describe_through_workers_matches_the_datasets_own_info(photos, tmp_path):
    folder = open_dataset(photos, "train")
    assert describe(folder, workers=2) == folder.info()
    pack(folder, tmp_path / "p", size=20)
    summary = describe(open_stream(tmp_path / "p", preprocess=ImageShape()), workers=0)
    assert summary["count"] == len(folder) and summary["per_class"] == folder.info()["per_class"]
    assert all(min(shape["shape"][1:]) == 20 for shape in summary["shapes"])
