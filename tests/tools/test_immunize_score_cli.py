"""`immunize score` in real pipes, on PNG edits made here (independent of `immunize edit`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from confidently.immunize.metrics import PAIR_METRICS, list_metrics, score_pairs
from confidently.immunize.transforms import apply_transform
from confidently.io.images import load_image, save_image
from confidently.schema import schema_errors

PAIR = [n for n in list_metrics() if n in PAIR_METRICS]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def venv_python_first(monkeypatch):
    """bin/immunize starts with `#!/usr/bin/env python3`: make that the interpreter running the tests."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))


def smooth(generator: torch.Generator, size: int) -> torch.Tensor:
    low = torch.rand(1, 3, 8, 8, generator=generator)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)[0]


def make_edits(folder: Path, methods: dict[str, float], per_method: int = 3, size: int = 32,
               jpeg_for: tuple[str, ...] = (), seed: int = 0) -> list[dict]:
    """PNG pairs: the 'immunized' edit is the clean edit plus noise of the method's strength."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for method, strength in methods.items():
        for i in range(per_method):
            rid = f"{method}-{i}"
            clean = smooth(generator, size)
            immunized = (clean + strength * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
            save_image(clean, folder / f"{rid}.clean.png")
            save_image(immunized, folder / f"{rid}.imm.png")
            record = {"id": rid, "method": method, "prompt": "a photo", "edit_clean": f"{rid}.clean.png",
                      "edit_immunized": f"{rid}.imm.png"}
            if method in jpeg_for and i < per_method - 1:  # the last one lacks the transformed edit
                save_image(apply_transform(immunized, "jpeg:75"), folder / f"{rid}.jpeg.png")
                save_image(apply_transform(clean, "jpeg:75"), folder / f"{rid}.clean-jpeg.png")  # the control
                record["edit_immunized_jpeg_75"] = f"{rid}.jpeg.png"
                record["edit_clean_jpeg_75"] = f"{rid}.clean-jpeg.png"
            records.append(record)
    return records


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_score_adds_metrics_and_writes_one_summary_per_group_and_transform(tmp_path, run_tool):
    records = make_edits(tmp_path, {"random": 0.02, "encoder": 0.2}, jpeg_for=("encoder",))
    records[0]["edit_immunized"] = records[0]["edit_clean"]  # an edit the immunization did not change at all
    save_image(torch.rand(3, 16, 16), tmp_path / "small.png")
    bad = {"id": "bad", "method": "random", "edit_clean": "random-1.clean.png", "edit_immunized": "small.png"}
    result = run_tool("immunize", "score", "--transforms", "jpeg:75", "--summary", "summary.json", "--skip-invalid",
                      input=jsonl([*records[:3], bad, *records[3:]]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.records
    error = out.pop(3)
    assert error["id"] == "bad" and "edit_immunized" in error["error"] and "one size" in error["error"]
    assert all(schema_errors(r, "immunize-score") == [] for r in out)
    scored, summaries = out[:6], out[6:]
    assert [r["id"] for r in scored] == [r["id"] for r in records]  # order kept
    for record, row in zip(records, scored, strict=True):
        assert row["kind"] == "immunize.scored" and row["prompt"] == "a photo" and row["method"] == record["method"]
        assert list(row["metrics"]) == PAIR and all(isinstance(v, float) for v in row["metrics"].values())
        assert set(row["metrics_notes"]) == {"vifp", "srsim"}  # 32 px: upsampled ×2, and said so
        assert ("metrics_transformed" in row) == ("edit_immunized_jpeg_75" in record)
    same = scored[0]["metrics"]
    assert same["ssim"] == pytest.approx(1) and same["vifp"] == pytest.approx(1) and same["psnr"] >= 60
    assert same["gmsd"] == pytest.approx(0, abs=1e-6) and same["fsim"] == pytest.approx(1)
    # the numbers are the library's on the files
    ref, test = (load_image(records[4][k], tmp_path) for k in ("edit_clean", "edit_immunized"))
    direct, _ = score_pairs(ref, test)
    assert scored[4]["metrics"] == pytest.approx({k: v[0] for k, v in direct.items()}, rel=1e-5)

    assert [(s["kind"], s["method"], s["transform"], s["n"]) for s in summaries] == [
        ("immunize.summary", "random", None, 3), ("immunize.summary", "random", "jpeg:75", 0),
        ("immunize.summary", "encoder", None, 3), ("immunize.summary", "encoder", "jpeg:75", 2)]
    random, random_jpeg, encoder, encoder_jpeg = summaries
    ssims = [r["metrics"]["ssim"] for r in scored[:3]]
    assert random["ssim"]["mean"] == pytest.approx(sum(ssims) / 3) and random["ssim"]["n"] == 3
    assert encoder["ssim"]["mean"] < random["ssim"]["mean"] and encoder["gmsd"]["mean"] > random["gmsd"]["mean"]
    assert encoder_jpeg["test"] == "edit_immunized_jpeg_75" and encoder_jpeg["missing"] == 1
    assert encoder_jpeg["ref"] == "edit_clean_jpeg_75"  # the control: the clean edit after the same transform
    jpeg_direct, _ = score_pairs(load_image(records[3]["edit_clean_jpeg_75"], tmp_path),
                                 load_image(records[3]["edit_immunized_jpeg_75"], tmp_path), ["ssim"])
    assert scored[3]["metrics_transformed"]["jpeg:75"]["ssim"] == pytest.approx(jpeg_direct["ssim"][0], rel=1e-5)
    assert random_jpeg["missing"] == 3 and random_jpeg["ssim"] is None
    for summary in summaries:
        assert summary["fid"] is None and summary["pr"] is None and summary["pr_recall"] is None
        assert "--fid-weights" in summary["skipped"]["fid"] and "vifp" in summary["notes"] or summary["n"] == 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summaries
    assert "mean ± std" in result.stderr and "fid, pr skipped" in result.stderr


def test_fid_and_precision_recall_from_a_local_weights_file_without_network(tmp_path, run_tool, monkeypatch):
    from confidently.immunize.metrics import _fid_inception_architecture
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in _fid_inception_architecture().state_dict().items()},
              tmp_path / "inception.safetensors")
    blocked = tmp_path / "offline"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refuse(*args, **kwargs):\n    raise OSError('network disabled in this test')\n"
        "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\n")
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    records = make_edits(tmp_path, {"encoder": 0.1}, per_method=6, size=48)
    result = run_tool("immunize", "score", "-", "--metrics", "ssim,fid,pr", "--fid-weights", "inception.safetensors",
                      "--group-by", "", input=jsonl(records), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(schema_errors(r, "immunize-score") == [] for r in result.records)
    (summary,) = [r for r in result.records if r["kind"] == "immunize.summary"]
    # the weights file was read and the set metrics ran on its features; their values are not checked here: a
    # random-weight Inception maps every image to nearly the same features (FID ~1e-14 for any two sets), and
    # tests/immunize/test_metrics.py checks FID and precision/recall on features that do differ
    assert summary["features"] == "inception" and summary["skipped"] == {} and "method" not in summary
    assert summary["fid"] is not None and summary["pr"] is not None and summary["pr_recall"] is not None
    assert "rank-deficient" in summary["notes"]["fid"]
    assert all(set(r["metrics"]) == {"ssim"} for r in result.records[:-1])


def test_bad_input_names_the_line_field_and_choices(tmp_path, run_tool):
    records = make_edits(tmp_path, {"random": 0.05}, per_method=3)
    unknown = run_tool("immunize", "score", "--metrics", "ssim,lpips", input=jsonl(records), cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown metric 'lpips'" in unknown.stderr and "haarpsi" in unknown.stderr
    assert unknown.stdout == ""

    del records[1]["edit_clean"]
    missing = run_tool("immunize", "score", "--metrics", "ssim,psnr", input=jsonl(records), cwd=tmp_path)
    assert missing.returncode == 3
    assert "<stdin>:2" in missing.stderr and "'edit_clean'" in missing.stderr and "immunize edit" in missing.stderr
    assert [r["id"] for r in missing.records] == ["random-0"]  # finished records are flushed first


def test_group_by_method_over_the_outputs_of_several_methods_on_the_same_photos(tmp_path, run_tool):
    """random, encoder and diffusion outputs of the same photos share ids: keys are (method, id)."""
    records = []
    for seed, (method, strength) in enumerate({"random": 0.02, "encoder": 0.1, "diffusion": 0.2}.items()):
        folder = tmp_path / method
        folder.mkdir()
        for record in make_edits(folder, {method: strength}, per_method=2, seed=seed):
            photo = record["id"].split("-")[-1]
            records.append({**record, "id": f"photo/{photo}", "edit_clean": f"{method}/{record['edit_clean']}",
                            "edit_immunized": f"{method}/{record['edit_immunized']}"})
    result = run_tool("immunize", "score", "--metrics", "ssim,psnr", input=jsonl(records), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scored = [r for r in result.records if r["kind"] == "immunize.scored"]
    summaries = [r for r in result.records if r["kind"] == "immunize.summary"]
    assert [(r["method"], r["id"]) for r in scored] == [(r["method"], r["id"]) for r in records]
    assert [(s["method"], s["n"]) for s in summaries] == [("random", 2), ("encoder", 2), ("diffusion", 2)]
    ssim = [s["ssim"]["mean"] for s in summaries]
    assert ssim[0] > ssim[1] > ssim[2]  # stronger noise, less similar edits: each group its own records
    assert all(schema_errors(r, "immunize-score") == [] for r in result.records)

    # the same (method, id) twice is still refused, naming the line and the key
    twice = run_tool("immunize", "score", "--metrics", "ssim", input=jsonl([*records, records[2]]), cwd=tmp_path)
    assert twice.returncode == 3, twice.stderr
    assert "<stdin>:7" in twice.stderr and 'duplicate (method, id) ("encoder", "photo/0")' in twice.stderr
    # without grouping by method, a repeated id is a duplicate as before
    flat = run_tool("immunize", "score", "--metrics", "ssim", "--group-by", "", input=jsonl(records), cwd=tmp_path)
    assert flat.returncode == 3 and 'duplicate id "photo/0"' in flat.stderr


def test_clip_similarity_of_both_edits_from_a_local_tiny_clip(tmp_path, run_tool):
    """`immunize tiny-clip` writes a random CLIP that `score --clip` loads offline; the scores are the library's."""
    from confidently.immunize.clip import ClipSimilarity

    made = run_tool("immunize", "tiny-clip", "--out", "clip", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.records[0]["kind"] == "immunize.clip" and (tmp_path / "clip" / "model.safetensors").is_file()
    assert (tmp_path / "clip" / "vocab.json").is_file() and (tmp_path / "clip" / "merges.txt").is_file()
    records = make_edits(tmp_path, {"random": 0.02, "encoder": 0.3}, per_method=3)
    records[1]["prompt"] = "two men in a wedding"
    del records[2]["prompt"]  # no prompt: no CLIP score, and a note saying why
    result = run_tool("immunize", "score", "--metrics", "ssim", "--clip", "clip", input=jsonl(records), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(schema_errors(r, "immunize-score") == [] for r in result.records)
    scored = [r for r in result.records if r["kind"] == "immunize.scored"]
    summaries = [r for r in result.records if r["kind"] == "immunize.summary"]
    assert scored[2]["clip"] is None and scored[2]["metrics_notes"]["clip"] == "no prompt in the record"
    clip = ClipSimilarity(tmp_path / "clip")
    for record, row in zip(records, scored, strict=True):
        if "prompt" not in record:
            continue
        assert set(row["clip"]) == {"ref", "test"} and all(-1 <= v <= 1 for v in row["clip"].values())
        images = [load_image(record[k], tmp_path) for k in ("edit_clean", "edit_immunized")]
        expected = clip.similarity(images, [record["prompt"]] * 2)
        assert [row["clip"]["ref"], row["clip"]["test"]] == pytest.approx(expected, abs=1e-5)
    random, encoder = summaries
    assert random["clip_model"] == "clip" and random["clip_ref"]["n"] == 2 and encoder["clip_test"]["n"] == 3
    assert random["clip_ref"]["mean"] == pytest.approx((scored[0]["clip"]["ref"] + scored[1]["clip"]["ref"]) / 2)
    assert random["clip_ref"]["q1"] <= random["clip_ref"]["median"] <= random["clip_ref"]["q3"]
    assert "clip (ref edit)" in result.stderr


def test_clip_refusals_name_the_fix(tmp_path, run_in_process, monkeypatch):
    records = make_edits(tmp_path, {"random": 0.02}, per_method=1)
    (tmp_path / "edits.jsonl").write_text(jsonl(records))
    (tmp_path / "empty").mkdir()
    result = run_in_process("immunize", "score", "edits.jsonl", "--metrics", "ssim", "--clip", "empty")
    assert result.returncode == 2 and "not a CLIP directory" in result.stderr and "tiny-clip" in result.stderr
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    result = run_in_process("immunize", "score", "edits.jsonl", "--metrics", "ssim", "--clip", "empty")
    assert result.returncode == 3 and "pip install transformers" in result.stderr
