"""WebDataset tar shards as a stream: the same records and pixels as the folder they were packed from,
each sample read once across ranks × workers, and unreadable shards or images named in the error."""

import io
import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import StreamLoader
from confidently.data.pack import pack
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.data.webdataset import WebDatasetStream, is_webdataset, open_stream
from confidently.errors import InvalidInput, UsageError
from PIL import Image

from tests.photos import make_imagenet_folder

EVAL = make_preprocess("eval", DataConfig((32, 32)))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """The val split of a photo folder (grey, CMYK, 16-bit and EXIF files included) and its tars, ~3 per shard."""
    root = make_imagenet_folder(tmp_path_factory.mktemp("photos"), 1, 2)
    out = tmp_path_factory.mktemp("packs") / "val"
    summaries = pack(open_dataset(root, "val"), out, max_bytes=20_000, split="val", workers=0)
    return open_dataset(root, "val"), out, summaries


def rows(source, preprocess=EVAL, **options) -> dict[str, tuple[torch.Tensor, int, dict]]:
    """Every record a loader gives, by id (each id once)."""
    out = {}
    for batch in StreamLoader(source, preprocess, batch_size=3, seed=7, **options):
        for record, image, label in zip(batch.records, batch.images, batch.labels, strict=True):
            assert record["id"] not in out
            out[record["id"]] = (image, int(label), record)
    return out


def same_pixels(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k][0], b[k][0]) and a[k][1] == b[k][1] for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_packed_tars_give_the_folders_records_and_pixels(packed, workers):
    folder, out, summaries = packed
    assert len(summaries) > 2 and sum(s["count"] for s in summaries) == len(folder)
    stream = open_stream(out, "val", preprocess=EVAL)
    assert len(stream) == len(folder) and stream.classes == folder.classes
    read = rows(stream, workers=workers)
    assert same_pixels(read, rows(folder, workers=0))
    record = read[folder.ids[0]][2]
    assert record["split"] == "val" and record["class_name"] == folder.classes[record["label"]]


def test_random_preprocessing_is_seeded_by_record_as_for_the_folder(packed):
    folder, out, _ = packed
    train = make_preprocess("train", DataConfig((24, 24)))
    assert same_pixels(rows(open_stream(out), train, workers=0), rows(folder, train, workers=0))


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffled_epochs_reorder_the_same_records_with_the_same_pixels(packed, workers):
    """Training order: shards and a buffer shuffled by (seed, epoch); augmentation by (seed, id, epoch)."""
    folder, out, _ = packed
    train = make_preprocess("train", DataConfig((24, 24)))

    def epoch(number, seed=7, workers=workers):
        loader = StreamLoader(open_stream(out, buffer=4), train, batch_size=3, seed=seed, shuffle=True,
                              workers=workers)
        return [(r["id"], image) for batch in loader.epoch(number)
                for r, image in zip(batch.records, batch.images, strict=True)]

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert [i for i, _ in first] == [i for i, _ in again] and all(torch.equal(a, b) for (_, a), (_, b) in
                                                                    zip(first, again, strict=True))
    assert sorted(i for i, _ in first) == sorted(i for i, _ in second) == sorted(folder.ids)
    assert [i for i, _ in first] != [i for i, _ in second] and [i for i, _ in first] != sorted(folder.ids)
    pixels = dict(first)
    assert all(torch.equal(image, pixels[i]) for i, image in epoch(0, workers=2 - workers))  # order may differ


def test_stream_labels_are_checked_as_they_come_naming_the_record(packed):
    _, out, _ = packed
    loader = StreamLoader(open_stream(out), EVAL, batch_size=3, workers=0, require_labels=True, num_classes=1)
    with pytest.raises(InvalidInput, match="outside the model's 1 classes") as info:
        list(loader)
    assert info.value.record_id and info.value.field == "label"


@pytest.mark.parametrize("pattern", ["all shards", "one shard"])
def test_ranks_and_workers_read_every_sample_once(packed, pattern):
    """Enough shards: ranks and workers share shards out; one shard: they share its samples out."""
    _, out, summaries = packed
    source = out if pattern == "all shards" else out / summaries[0]["shard"]
    expected = {s["first_id"] for s in summaries} if pattern == "all shards" else None
    parts = []
    for rank in range(2):
        parts.append(set(rows(open_stream(source), workers=2, rank=rank, world=2)))
        loader = StreamLoader(open_stream(source), EVAL, batch_size=3, rank=rank, world=2)
        assert len(loader.dataset) == len(parts[-1])
    assert not parts[0] & parts[1]
    whole = set(rows(open_stream(source), workers=0))
    assert parts[0] | parts[1] == whole and (expected is None or expected <= whole)


def test_is_webdataset():
    for text in ["a.tar", "shards-{000000..000009}.tar", "pipe:curl -s https://host/s-{0..3}.tar",
                 "https://host/data/s-000.tar", "a.tar::b.tar"]:
        assert is_webdataset(text), text
    for text in ["m.jsonl", "demo:digits", "s.safetensors", "https://host/m.jsonl"]:
        assert not is_webdataset(text), text


def test_commands_that_index_records_refuse_tars_and_say_how_to_pack_them(packed, run_tool):
    _, out, _ = packed
    for source in [out, out / "val-000000.tar", "https://host/s-{000..003}.tar"]:
        with pytest.raises(UsageError, match="dataset pack .* --format safetensors"):
            open_dataset(source)
    result = run_tool("plant-backdoor", "asr", "--data", str(out / "val-000000.tar"), "--model", "missing.safetensors")
    assert result.returncode == 2 and "--format safetensors" in result.stderr, result.stderr


def _tar(path, samples):
    from webdataset import TarWriter

    with open(path, "wb") as handle, TarWriter(handle, encoder=False) as tar:
        for sample in samples:
            tar.write(sample)


def _png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_foreign_tars_and_their_bad_samples(tmp_path):
    """Shards from elsewhere: the tar key is the id without a json member; a bad image is named by shard and key."""
    _tar(tmp_path / "s.tar", [{"__key__": "cat1", "png": _png("red"), "cls": b"1"},
                              {"__key__": "dog2", "jpg": b"not a jpeg", "json": json.dumps({"id": "d"}).encode()},
                              {"__key__": "cow3", "png": _png("blue")}])
    stream = WebDatasetStream(str(tmp_path / "s.tar"), EVAL)
    with pytest.raises(TypeError):
        len(stream)  # no sidecar: unknown length
    with pytest.raises(InvalidInput) as info:
        rows(stream, workers=0)
    assert info.value.record_id == "d" and "s.tar:dog2.jpg" in str(info.value)
    errors = []
    read = rows(stream, workers=0, on_invalid=errors.append)
    assert {k: v[1] for k, v in read.items()} == {"cat1": 1, "cow3": -1} and len(errors) == 1


def test_unreadable_shards_are_invalid_input_naming_them(packed, tmp_path):
    _, out, summaries = packed
    whole = (out / summaries[0]["shard"]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[: len(whole) // 2])
    for name, words in [("missing.tar", "No such file"), ("cut.tar", "cannot read this WebDataset shard")]:
        with pytest.raises(InvalidInput) as info:
            rows(WebDatasetStream(str(tmp_path / name), EVAL), workers=0)
        assert name in str(info.value) and words in str(info.value)
    errors = []
    rows(WebDatasetStream([str(tmp_path / "cut.tar"), str(out / summaries[1]["shard"])], EVAL), workers=2,
         on_invalid=errors.append)
    assert len(errors) == 1  # reported once, by the worker reading that shard
