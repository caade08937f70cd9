"""`unadv-patch` as a user runs it: train → eval rows, baseline files, apply exactly reproducible, bad input."""

import json

import pytest
import torch
from confidently.io.artifacts import load_artifact
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_resnet):
    import subprocess

    from confidently.models import save_model

    from tests.conftest import tool_path

    root = tmp_path_factory.mktemp("unadv")
    save_model(trained_resnet, root / "model.safetensors")
    proc = subprocess.run([tool_path("dataset"), "export", "demo:digits", "--split", "test", "--limit", "40",
                           "--out", "test"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (root / "test.jsonl").write_text(proc.stdout)
    return root


def test_train_eval_and_baselines(run_tool, setup):
    trained = run_tool("unadv-patch", "train", "--model", "model.safetensors", "--data", "demo:digits",
                       "--split", "train", "--patch-size", "8", "--steps", "30", "--batch-size", "32",
                       "--out", "p.safetensors", cwd=setup)
    assert trained.returncode == 0, trained.stderr
    (summary,) = trained.records
    assert summary["cmd"] == "train" and summary["patch_size"] == 8 and summary["patch_frac"] == 64 / 1024
    tensors = load_file(setup / "p.safetensors")
    assert tensors["patches"].shape == (10, 3, 8, 8) and 0 <= tensors["patches"].min() <= tensors["patches"].max() <= 1
    best = run_tool("unadv-patch", "baseline", "best-image", "--model", "model.safetensors", "--data", "demo:digits",
                    "--split", "train", "--patch-size", "8", "--out", "best.safetensors", cwd=setup)
    assert best.returncode == 0, best.stderr
    rows = run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                    "p.safetensors", "--baseline", "best.safetensors", "--corruptions", "gaussian_noise,fog",
                    "--severities", "1,3", cwd=setup).records
    arms = {r["arm"] for r in rows}
    assert arms == {"none", "random", "unadv", "best"} and len(rows) == 4 * (1 + 2 * 2)
    assert all(r["n"] == 40 and 0 <= r["acc"] <= 1 for r in rows)
    assert {(r["corruption"], r["severity"]) for r in rows} == {("clean", 0), ("gaussian_noise", 1),
                                                                 ("gaussian_noise", 3), ("fog", 1), ("fog", 3)}


def test_apply_places_exactly_the_recorded_patch(run_tool, setup):
    from confidently.io.images import load_image
    from confidently.unadversarial import composite

    applied = run_tool("unadv-patch", "apply", "test.jsonl", "--patches", "p.safetensors",
                       "--out", "stamped.safetensors", cwd=setup)
    assert applied.returncode == 0, applied.stderr
    records = applied.records
    stamped = load_file(setup / "stamped.safetensors")["images"]
    patches, _ = load_artifact(setup / "p.safetensors")
    originals = [json.loads(line) for line in (setup / "test.jsonl").read_text().splitlines()]
    for i in (0, 7):
        place = records[i]["placement"]
        spot = torch.tensor([[place["angle_deg"], place["scale"], place["dx"], place["dy"]]])
        image = load_image(originals[i]["image"], setup)
        expected = composite(image[None], patches["patches"][records[i]["patch_class"]][None], spot)[0]
        assert torch.allclose(stamped[i], expected, atol=1e-3)
        assert records[i]["patch_class"] == originals[i]["label"]
    again = run_tool("unadv-patch", "apply", "test.jsonl", "--patches", "p.safetensors", "--out", "again.safetensors",
                     cwd=setup)
    assert [r["placement"] for r in again.records] == [r["placement"] for r in records]
    assert torch.equal(load_file(setup / "again.safetensors")["images"], stamped)


def test_bad_input(run_tool, setup, tmp_path):
    too_big = run_tool("unadv-patch", "train", "--model", "model.safetensors", "--data", "demo:digits",
                       "--patch-size", "40", "--out", "x.safetensors", cwd=setup)
    assert too_big.returncode == 2 and "does not fit" in too_big.stderr
    from confidently.io.artifacts import artifact_metadata, save_artifact

    save_artifact(tmp_path / "five.safetensors", {"patches": torch.rand(5, 3, 4, 4)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d"))
    wrong = run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                     tmp_path / "five.safetensors", cwd=setup)
    assert wrong.returncode == 3 and "10 classes" in wrong.stderr
    unknown = run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                       "p.safetensors", "--corruptions", "snowstorm", cwd=setup)
    assert unknown.returncode == 2 and "snowstorm" in unknown.stderr


def test_in_loop_corruptions_conflict_rows_and_the_qr_baseline(run_tool, setup, tmp_path, monkeypatch):
    trained = run_tool("unadv-patch", "train", "--model", "model.safetensors", "--data", "demo:digits",
                       "--split", "train", "--patch-size", "8", "--steps", "12", "--batch-size", "32",
                       "--train-corruptions", "gaussian_noise,jpeg_compression", "--train-severities", "1,3",
                       "--out", "pc.safetensors", cwd=setup)
    assert trained.returncode == 0, trained.stderr
    tensors, meta = load_artifact(setup / "pc.safetensors")
    assert 0 <= tensors["patches"].min() <= tensors["patches"].max() <= 1
    assert meta["train_corruptions"] == ["gaussian_noise", "jpeg_compression"] and meta["train_severities"] == [1, 3]
    bad = run_tool("unadv-patch", "train", "--model", "model.safetensors", "--data", "demo:digits",
                   "--train-corruptions", "snowstorm", "--out", "x.safetensors", cwd=setup)
    assert bad.returncode == 2 and "snowstorm" in bad.stderr

    pytest.importorskip("qrcode")
    qr = run_tool("unadv-patch", "baseline", "qr", "--model", "model.safetensors", "--patch-size", "12",
                  "--out", "qr.safetensors", cwd=setup)
    assert qr.returncode == 0, qr.stderr
    codes, qr_meta = load_artifact(setup / "qr.safetensors")
    assert qr_meta["warp"] == "nearest" and qr_meta["baseline"] == "qr"
    assert codes["patches"].shape == (10, 3, 12, 12) and set(codes["patches"].unique().tolist()) == {0.0, 1.0}
    rows = run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                    "pc.safetensors", "--baseline", "qr.safetensors", "--corruptions", "contrast", "--severities",
                    "2", "--conflict", cwd=setup).records
    assert {r["arm"] for r in rows} == {"none", "random", "unadv", "qr", "conflict"} and len(rows) == 5 * 2
    for row in (r for r in rows if r["arm"] == "conflict"):
        assert row["pred_image_frac"] == row["acc"] and 0 <= row["pred_patch_frac"] <= 1
        assert row["pred_image_frac"] + row["pred_patch_frac"] <= 1

    blocked = tmp_path / "blocked"
    (blocked / "qrcode").mkdir(parents=True)
    (blocked / "qrcode" / "__init__.py").write_text("raise ImportError('qrcode is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    missing = run_tool("unadv-patch", "baseline", "qr", "--model", "model.safetensors", "--patch-size", "12",
                       "--out", "none.safetensors", cwd=setup)
    assert missing.returncode == 3 and "pip install 'confidently[qr]'" in missing.stderr
    assert not (setup / "none.safetensors").exists()
