"""`dataset` as a user runs it: real executables, real pipes, every bad input."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.io.images import save_image
from confidently.models import create_model, save_model
from confidently.schema import schema_errors
from safetensors.torch import save_file

from tests.conftest import tool_path
from tests.photos import make_imagenet_folder


def test_export_pipes_into_a_reader(tmp_path):
    """`dataset export demo:digits --split test --out DIR | head -3` gives three valid records."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(f"'{tool_path('dataset')}' export demo:digits --split test --out out | head -3",
                          shell=True, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3, proc.stderr
    for line in lines:
        record = json.loads(line)
        assert schema_errors(record, "image-record") == []
        assert record["split"] == "test" and (tmp_path / record["image"]).is_file()
    # the records feed the shared reader (stdin paths resolve from the working directory)
    reader = subprocess.run([tool_path("dataset"), "info", "-"], input=proc.stdout, capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert reader.returncode == 0, reader.stderr
    info = json.loads(reader.stdout)
    assert schema_errors(info, "dataset-info") == []
    assert info["count"] == 3 and info["shapes"] == [{"shape": [3, 32, 32], "count": 3}]


def test_export_full_split_matches_the_source(run_tool, tmp_path):
    result = run_tool("dataset", "export", "demo:digits", "--split", "test", "--out", "digits")
    assert result.returncode == 0, result.stderr
    records = result.records
    source = open_dataset("demo:digits", "test")
    assert [r["id"] for r in records] == source.ids
    assert (tmp_path / "digits" / "manifest.jsonl").is_file()
    exported = open_dataset(tmp_path / "digits" / "manifest.jsonl")
    assert torch.equal(collect(exported)[0], collect(source)[0])  # PNG is lossless
    assert open_dataset(tmp_path / "digits").classes == [str(i) for i in range(10)]  # also an image folder


def test_export_limit_shard_and_format(run_tool):
    full = run_tool("dataset", "export", "demo:shapes?classes=3&per_class=4", "--out", "s", "--limit", "7")
    assert [r["class_name"] for r in full.records][:1] == ["red circle"] and len(full.records) == 7
    parts = [run_tool("dataset", "export", "demo:shapes?classes=3&per_class=4", "--out", "s", "--limit", "7",
                      "--shard", f"{i}/2", "--format", "jpg") for i in range(2)]
    ids = sorted(r["id"] for part in parts for r in part.records)
    assert ids == sorted(r["id"] for r in full.records)
    assert all(r["image"].endswith(".jpg") for part in parts for r in part.records)


@pytest.mark.ray
def test_export_with_ray_equals_serial(run_tool):
    serial = run_tool("dataset", "export", "demo:digits", "--split", "test", "--limit", "20", "--out", "a")
    ray = run_tool("dataset", "export", "demo:digits", "--split", "test", "--limit", "20", "--out", "a",
                   "--engine", "ray")
    assert ray.returncode == 0, ray.stderr
    assert ray.stdout == serial.stdout


def test_info_of_every_source_kind(run_tool, tmp_path):
    for i in range(4):
        save_image(torch.rand(3, 10, 12), tmp_path / "folder" / f"c{i % 2}" / f"{i}.png")
    save_file({"images": torch.zeros(3, 3, 5, 5, dtype=torch.uint8), "labels": torch.tensor([0, 1, 0])},
              tmp_path / "s.safetensors")
    for source, count in [("demo:digits", 1797), ("demo:photos", None), ("folder", 4), ("s.safetensors", 3)]:
        result = run_tool("dataset", "info", source)
        assert result.returncode == 0, result.stderr
        info = result.records[0]
        assert schema_errors(info, "dataset-info") == []
        assert count is None or info["count"] == count


def test_split_records_and_classes(run_tool, tmp_path):
    manifest = run_tool("dataset", "export", "demo:shapes?classes=4&per_class=10", "--out", "img").stdout
    (tmp_path / "m.jsonl").write_text(manifest)
    split = run_tool("dataset", "split", "m.jsonl", "--fractions", "train=0.75,val=0.25", "--out", "splits")
    assert split.returncode == 0, split.stderr
    names = [r["split"] for r in split.records]
    # stratified: each class of 10 gives 7.5 / 2.5 records, rounded the same way for every class
    assert names.count("val") == 8 and names.count("train") == 32
    assert len(collect(open_dataset(tmp_path / "splits" / "val.jsonl"))[0]) == 8  # paths rebased to the folder
    again = run_tool("dataset", "split", "-", "--fractions", "train=0.75,val=0.25", input=manifest)
    assert [r["split"] for r in again.records] == names
    tasks = run_tool("dataset", "split", "m.jsonl", "--by", "classes", "--classes", "source:0-1",
                     "--classes", "target:2,3", "--relabel")
    target = [r for r in tasks.records if r["split"] == "target"]
    assert {r["label"] for r in target} == {0, 1} and {r["class_name"] for r in target} == {"blue triangle",
                                                                                         "yellow cross"}


def test_split_of_a_demo_set_says_export_first(run_tool):
    result = run_tool("dataset", "split", "demo:digits")
    assert result.returncode == 2 and "export it first" in result.stderr


# --- bad input: exit 3, one line naming line and field, no partial output, no traceback -------------------------

def bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    save_image(torch.rand(3, 8, 8), tmp_path / "ok.png")
    (tmp_path / "trunc.png").write_bytes((tmp_path / "ok.png").read_bytes()[:50])
    (tmp_path / "notimage.png").write_text("hello")
    save_file({"images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "flat": torch.zeros(2, 8)},
              tmp_path / "t.safetensors")
    ok = '{"id":"a","image":"ok.png"}\n'
    return {
        "malformed": (ok + '{"id": "b", "image": \n', "malformed JSON"),
        "no_id": (ok + '{"image":"ok.png"}\n', "field 'id'"),
        "duplicate": (ok + ok, "duplicate id"),
        "missing_file": (ok + '{"id":"b","image":"nope.png"}\n', "does not exist"),
        "truncated": (ok + '{"id":"b","image":"trunc.png"}\n', "not a readable image"),
        "not_image": (ok + '{"id":"b","image":"notimage.png"}\n', "not a readable image"),
        "missing_key": (ok + '{"id":"b","image":{"tensors":"t.safetensors","key":"x","index":0}}\n', "no tensor 'x'"),
        "bad_index": (ok + '{"id":"b","image":{"tensors":"t.safetensors","key":"images","index":9}}\n',
                      "out of range"),
        "wrong_shape": (ok + '{"id":"b","image":{"tensors":"t.safetensors","key":"flat","index":0}}\n', "shape"),
    }


@pytest.mark.parametrize("case", ["malformed", "no_id", "duplicate", "missing_file", "truncated", "not_image",
                                  "missing_key", "bad_index", "wrong_shape"])
def test_bad_records_exit_3_with_line_and_field(run_tool, tmp_path, case):
    text, words = bad_inputs(tmp_path)[case]
    (tmp_path / "in.jsonl").write_text(text)
    result = run_tool("dataset", "export", "in.jsonl", "--out", "out")
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "in.jsonl:2" in lines[0] and words in lines[0]
    assert not (tmp_path / "out" / "manifest.jsonl").exists()  # no partial manifest
    if case in ("missing_file", "truncated", "not_image", "missing_key", "bad_index", "wrong_shape"):
        assert "field 'image'" in lines[0]
        assert [r["id"] for r in result.records] == ["a"]  # the finished record was flushed first


def test_skip_invalid_writes_error_records(run_tool, tmp_path):
    text, _ = bad_inputs(tmp_path)["missing_file"]
    (tmp_path / "in.jsonl").write_text(text + '{"id":"c","image":"ok.png"}\n')
    result = run_tool("dataset", "export", "in.jsonl", "--out", "out", "--skip-invalid")
    assert result.returncode == 0, result.stderr
    records = result.records
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert schema_errors(records[1], "error-record") == [] and "does not exist" in records[1]["error"]


def test_all_invalid_is_exit_4(run_tool, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id":"b","image":"nope.png"}\n')
    assert run_tool("dataset", "export", "in.jsonl", "--out", "out", "--skip-invalid").returncode == 4


def test_model_file_checks(tmp_path):
    """A pickle or a metadata-less file is refused by the model loader (exit 3 in every tool)."""
    from confidently.errors import InvalidInput
    from confidently.models import load_model

    torch.save({"w": torch.zeros(1)}, tmp_path / "m.pt")
    save_file({"w": torch.zeros(1)}, tmp_path / "bare.safetensors")
    (tmp_path / "junk.safetensors").write_text("junk")
    for name in ("m.pt", "bare.safetensors", "junk.safetensors"):
        with pytest.raises(InvalidInput) as info:
            load_model(tmp_path / name)
        assert InvalidInput.exit_code == 3 and str(tmp_path / name) in str(info.value)
    save_model(create_model("tiny_resnet", 2), tmp_path / "ok.safetensors")
    assert load_model(tmp_path / "ok.safetensors").num_classes == 2


def test_export_never_writes_into_a_users_folder_unless_forced(run_tool, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    source = "demo:shapes?classes=2&per_class=2"
    refused = run_tool("dataset", "export", source, "--out", "photos")
    assert refused.returncode == 2 and "photos" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["holiday.jpg"]
    assert run_tool("dataset", "export", source, "--out", "photos", "--force").returncode == 0
    assert run_tool("dataset", "export", source, "--out", "photos").returncode == 0  # its own folder now
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"mine"


# --- dataset pack: shards of a photo folder, resumed after a bad image ---------------------------------------------

def test_pack_stops_at_a_truncated_jpeg_then_resumes_with_skip_invalid(run_tool, tmp_path):
    make_imagenet_folder(tmp_path / "photos", 1, 2, truncated=True)  # val: 10 good photos, then a cut JPEG
    args = ("pack", "photos", "--split", "val", "--out", "p", "--shard-size", "0.01", "--workers", "2")
    stopped = run_tool("dataset", *args)
    assert stopped.returncode == 3 and "Traceback" not in stopped.stderr
    assert "truncated.JPEG" in stopped.stderr and "not a readable image" in stopped.stderr
    assert stopped.records and all(schema_errors(r, "dataset-pack-shard") == [] for r in stopped.records)
    finished = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "p").glob("shard-*")}
    resumed = run_tool("dataset", *args, "--skip-invalid")
    assert resumed.returncode == 0, resumed.stderr
    errors = [r for r in resumed.records if "error" in r]
    assert len(errors) == 1 and schema_errors(errors[0], "error-record") == []
    assert errors[0]["id"].endswith("truncated.JPEG")
    assert resumed.records[:len(stopped.records)] == stopped.records
    assert {name: (tmp_path / "p" / name).stat().st_mtime_ns for name in finished} == finished  # not rewritten
    info = run_tool("dataset", "info", "p", "--workers", "2")
    assert info.returncode == 0, info.stderr
    summary = info.records[0]
    assert schema_errors(summary, "dataset-info") == [] and summary["count"] == 10
    assert summary["splits"] == {"val": 10} and summary["num_classes"] == 3


def test_export_resizes_and_crops(run_tool, tmp_path):
    from confidently.data.pack import fit_image

    make_imagenet_folder(tmp_path / "photos", 1, 1, special=False)
    result = run_tool("dataset", "export", "photos/val", "--size", "24", "--crop", "--out", "e")
    assert result.returncode == 0, result.stderr
    source, exported = open_dataset(tmp_path / "photos" / "val"), open_dataset(tmp_path / "e" / "manifest.jsonl")
    assert exported.ids == source.ids
    for i in range(len(source)):
        assert torch.equal(exported.raw(i), fit_image(source.raw(i), 24, crop=True))
