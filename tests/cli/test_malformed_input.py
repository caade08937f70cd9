"""Malformed input to every record-reading tool: exit 3 naming the line, no traceback, nothing left behind.

The reader library is fuzzed in-process with thousands of examples (tests/io/test_records.py); here each
real executable gets the same malformed lines, in two runs: one stopping at the first bad line, one with
--skip-invalid going through all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from confidently.io.images import save_image
from confidently.models import create_model, save_model
from safetensors.torch import save_file

from tests.conftest import tool_path

GOOD = '{"id":"good","image":"ok.png","label":1}'
MALFORMED = {  # what fuzzing found, and the classic mistakes
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "long_int": b'{"id":"n","image":"ok.png","label":' + b"7" * 5000 + b"}",
    "surrogate_id": b'{"id":"\\ud800","image":"ok.png"}',
    "bad_utf8": b'{"id":"b\xff\xfe","image":"ok.png"}',
    "truncated": b'{"id":"t","image":',
    "not_object": b"[1,2,3]",
    "nan_pixels": b'{"id":"nan","image":{"tensors":"nan.safetensors","key":"images","index":0}}',
    "bomb": b'{"id":"bomb","image":"bomb.png"}',
    "folder_image": b'{"id":"dir","image":"folder"}',
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from tests.io.test_images import png_header

    root = tmp_path_factory.mktemp("malformed")
    save_image(torch.rand(3, 32, 32), root / "ok.png")
    (root / "bomb.png").write_bytes(png_header(60000, 60000))
    (root / "folder").mkdir()
    save_file({"images": torch.full((1, 3, 32, 32), float("nan"))}, root / "nan.safetensors")
    save_model(create_model("tiny_resnet", 2, classes=["a", "b"]), root / "model.safetensors")
    lines = list(MALFORMED.values())
    (root / "first-bad.jsonl").write_bytes(GOOD.encode() + b"\n" + MALFORMED["deep"] + b"\n")
    (root / "all-bad.jsonl").write_bytes(b"\n".join([GOOD.encode(), *lines]) + b"\n")
    return root


def run(workdir, *args):
    proc = subprocess.run([tool_path(args[0]), *args[1:]], cwd=workdir, capture_output=True, env=ENV, timeout=300)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")


COMMANDS = {
    "dataset-export": (["dataset", "export", "{}", "--out", "out"], "out"),
    "dataset-info": (["dataset", "info", "{}"], None),
    "certify-run": (["certify", "run", "{}", "--model", "model.safetensors", "--ablation", "column",
                     "--ablation-size", "8", "--patch-sizes", "1", "--summary", "summary.json"], "summary.json"),
    "advtrain-eval": (["advtrain", "eval", "--model", "model.safetensors", "--data", "{}", "--eps", "0"], None),
    "ablate-curve": (["ablate", "curve", "{}", "--model", "model.safetensors"], None),
}


def command(name, source):
    args, leaves = COMMANDS[name]
    return [arg.format(source) for arg in args], leaves


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_bad_line_stops_with_exit_3_naming_it(workdir, name):
    args, leaves = command(name, "first-bad.jsonl")
    code, stdout, stderr = run(workdir, *args)
    assert code == 3, stderr
    assert "first-bad.jsonl:2" in stderr and "nested deeper" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert leaves is None or not (workdir / leaves).exists()
    for line in stdout.splitlines():  # whatever was written before the bad line is whole JSON
        json.loads(line)


@pytest.mark.parametrize("name", ["dataset-export", "certify-run", "dataset-info"])
def test_skip_invalid_goes_through_every_bad_line(workdir, name):
    args, _ = command(name, "all-bad.jsonl")
    code, stdout, stderr = run(workdir, *args, "--skip-invalid")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    if name == "dataset-info":
        info = json.loads(stdout)  # records that parse count; only the one good image has a shape
        assert info["count"] == 4 and info["shapes"] == [{"shape": [3, 32, 32], "count": 1}]
        assert f"skipped {len(MALFORMED)} invalid records" in stderr
        return
    records = [json.loads(line) for line in stdout.splitlines()]  # stdout decoded as UTF-8 above: always valid
    assert records[0]["id"] == "good" and "error" not in records[0]
    errors = [r["error"] for r in records[1:]]
    assert len(errors) == len(MALFORMED)
    for line, error in enumerate(errors, start=2):
        assert f"all-bad.jsonl:{line}" in error


def test_report_names_the_line_and_field_or_skips_it(workdir):
    good = (Path(__file__).parents[1] / "report" / "fixtures" / "certify.jsonl").read_text().splitlines()[0]
    bad_type = json.loads(good)
    bad_type["certify"]["max_certified_patch"] = "big"
    (workdir / "report.jsonl").write_bytes(b"\n".join([good.encode(), json.dumps(bad_type).encode(),
                                                       MALFORMED["bad_utf8"]]) + b"\n")
    code, _, stderr = run(workdir, "report", "report.jsonl", "--out", "site")
    assert code == 3 and "report.jsonl:2, field 'certify.max_certified_patch'" in stderr, stderr
    assert "Traceback" not in stderr and not (workdir / "site").exists()
    code, stdout, stderr = run(workdir, "report", "report.jsonl", "--out", "site", "--skip-invalid")
    assert code == 0, stderr
    assert "skipped 2 invalid lines" in stderr and (workdir / "site" / "index.html").exists()


@pytest.mark.parametrize("args", [
    ["certify", "run", "missing.jsonl", "--model", "model.safetensors"],
    ["report", "missing.jsonl", "--out", "site2"],
    ["dataset", "info", "missing.jsonl"],
    ["advtrain", "eval", "--model", "folder", "--data", "first-bad.jsonl"],
    ["certify", "run", "folder", "--model", "model.safetensors"],
])
def test_a_missing_or_directory_argument_file_is_exit_2_in_every_tool(workdir, args):
    code, _, stderr = run(workdir, *args)
    assert code == 2, stderr
    assert ("missing.jsonl" in stderr and ("no such file" in stderr or "not found" in stderr)) \
        or "folder is a directory" in stderr
    assert "Traceback" not in stderr


def test_export_of_empty_input_is_exit_4_and_leaves_no_folder(workdir):
    proc = subprocess.run([tool_path("dataset"), "export", "-", "--out", "empty"], cwd=workdir, input=b"",
                          capture_output=True, env=ENV, timeout=120)
    assert proc.returncode == 4 and b"no records" in proc.stderr
    assert not (workdir / "empty").exists()


def test_export_keeps_fields_it_does_not_own(workdir):
    (workdir / "sub").mkdir(exist_ok=True)
    save_image(torch.rand(3, 8, 8), workdir / "sub" / "m.png")
    (workdir / "sub" / "masked.jsonl").write_text('{"id":"m","image":"../ok.png","mask":"m.png","extra":[1]}\n')
    code, stdout, stderr = run(workdir, "dataset", "export", "sub/masked.jsonl", "--out", "kept")
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["extra"] == [1] and (workdir / record["mask"]).resolve() == (workdir / "sub" / "m.png").resolve()
    manifest = json.loads((workdir / "kept" / "manifest.jsonl").read_text())
    assert (workdir / "kept" / manifest["mask"]).resolve() == (workdir / "sub" / "m.png").resolve()
