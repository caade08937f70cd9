"""`unadv-patch` as a user runs it: train → eval rows, baseline files, apply exactly reproducible, bad input."""

import json

import pytest
import torch
from confidently.io.artifacts import load_artifact
from confidently.io.images import load_image
from confidently.models import load_model
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
    assert all(r["n"] == 40 and r["correct"] == round(r["acc"] * 40) for r in rows)
    source = [json.loads(line) for line in (setup / "test.jsonl").read_text().splitlines()]
    images = torch.stack([load_image(r["image"], setup) for r in source])
    model = load_model(setup / "model.safetensors").eval()
    with torch.no_grad():
        correct = int((model(images).argmax(1) == torch.tensor([r["label"] for r in source])).sum())
    (plain,) = [r for r in rows if r["arm"] == "none" and r["corruption"] == "clean"]
    assert plain["correct"] == correct  # the unpatched arm is the model on the records, nothing pasted
    assert {(r["corruption"], r["severity"]) for r in rows} == {("clean", 0), ("gaussian_noise", 1),
                                                                 ("gaussian_noise", 3), ("fog", 1), ("fog", 3)}
    severe = [run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                       "p.safetensors", "--corruptions", "gaussian_noise,fog", "--severities", "5", "--batch-size",
                       size, cwd=setup).records for size in ("7", "64")]
    assert severe[0] == severe[1]  # each image's corruption noise comes from (seed, id), not from its batch


def test_apply_places_exactly_the_recorded_patch(run_tool, setup):
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


def test_bad_input(run_in_process, setup, tmp_path):
    too_big = run_in_process("unadv-patch", "train", "--model", "model.safetensors", "--data", "demo:digits",
                       "--patch-size", "40", "--out", "x.safetensors", cwd=setup)
    assert too_big.returncode == 2 and "does not fit" in too_big.stderr
    from confidently.io.artifacts import artifact_metadata, save_artifact

    save_artifact(tmp_path / "five.safetensors", {"patches": torch.rand(5, 3, 4, 4)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d"))
    wrong = run_in_process("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                     tmp_path / "five.safetensors", cwd=setup)
    assert wrong.returncode == 3 and "10 classes" in wrong.stderr
    unknown = run_in_process("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
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
    # what the fractions count is checked exactly in tests/unadversarial/test_patches.py; here: the rows exist
    conflict = [r for r in rows if r["arm"] == "conflict"]
    assert [r["corruption"] for r in conflict] == ["clean", "contrast"]
    assert all(r["pred_image_frac"] == r["acc"] and r["pred_patch_frac"] is not None for r in conflict)

    blocked = tmp_path / "blocked"
    (blocked / "qrcode").mkdir(parents=True)
    (blocked / "qrcode" / "__init__.py").write_text("raise ImportError('qrcode is not installed here')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    missing = run_tool("unadv-patch", "baseline", "qr", "--model", "model.safetensors", "--patch-size", "12",
                       "--out", "none.safetensors", cwd=setup)
    assert missing.returncode == 3 and "pip install 'confidently[qr]'" in missing.stderr
    assert not (setup / "none.safetensors").exists()


def test_eval_places_patches_as_they_were_trained_unless_told_otherwise(run_tool, setup, tmp_path):
    from dataclasses import replace

    from confidently.io.artifacts import artifact_metadata, save_artifact
    from confidently.unadversarial import Placement

    corner = Placement(degrees=0.0, scale=(1.0, 1.0), mode="region", region=(0.9, 0.9, 1.0, 1.0))
    save_artifact(tmp_path / "corner.safetensors", {"patches": torch.rand(10, 3, 16, 16)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d", transform=corner.as_dict(), seed=1))

    def evaluate(*flags):
        result = run_tool("unadv-patch", "eval", "--model", "model.safetensors", "--data", "test.jsonl", "--patches",
                          tmp_path / "corner.safetensors", "--corruptions", "none", *flags, cwd=setup)
        assert result.returncode == 0, result.stderr
        return result.records

    stored = evaluate()
    assert {r["placement_source"] for r in stored} == {"patches"}
    assert all(Placement.from_metadata(r["placement"]) == corner for r in stored)
    told = evaluate("--placement", "region", "--region", "0.9,0.9,1,1", "--degrees", "0", "--scale", "1,1",
                    "--translate", "0.3")
    assert {r["placement_source"] for r in told} == {"options"}
    assert [(r["arm"], r["correct"]) for r in told] == [(r["arm"], r["correct"]) for r in stored]
    thesis = evaluate("--placement", "anywhere", "--region", "0,0,1,1", "--degrees", "45", "--scale", "0.9,1.1",
                      "--translate", "0.3")  # what eval did before, whatever the file said
    assert [r["correct"] for r in thesis] != [r["correct"] for r in stored]  # 16 px over the digit vs in a corner
    tilted = evaluate("--degrees", "30")  # one option given: that field only
    assert {r["placement_source"] for r in tilted} == {"patches+options"}
    assert all(Placement.from_metadata(r["placement"]) == replace(corner, degrees=30.0) for r in tilted)


def test_export_writes_each_class_patch_as_a_lossless_png(run_tool, setup, tmp_path):
    from confidently.io.artifacts import artifact_metadata, save_artifact

    patches = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    save_artifact(tmp_path / "p.safetensors", {"patches": patches, "class_ids": torch.arange(10)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d"))
    exported = run_tool("unadv-patch", "export", "--patches", "p.safetensors", "--out", "sticker.png", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert [(r["class_id"], r["artifact"], r["size"]) for r in exported.records] == \
        [(c, f"sticker-{c}.png", [8, 8]) for c in range(10)]
    for c in range(10):
        png = load_image(str(tmp_path / f"sticker-{c}.png"))
        assert (png - patches[c]).abs().max() <= 0.5 / 255 + 1e-6  # lossless up to 8-bit rounding
    flipped = run_tool("unadv-patch", "export", "--patches", "p.safetensors", "--out", "s.png", "--flip-v",
                       cwd=tmp_path)
    assert flipped.returncode == 2 and "--flip-v" in flipped.stderr
    neither = run_tool("unadv-patch", "export", "--out", "s.png", cwd=tmp_path)
    assert neither.returncode == 2 and "--patches" in neither.stderr
    (tmp_path / "mine-3.png").write_bytes(b"someone else's picture")
    refused = run_tool("unadv-patch", "export", "--patches", "p.safetensors", "--out", "mine.png", cwd=tmp_path)
    assert refused.returncode == 2 and not (tmp_path / "mine-0.png").exists()
    assert (tmp_path / "mine-3.png").read_bytes() == b"someone else's picture"


def test_train_and_eval_stream_a_folder_of_mixed_size_photos(run_tool, tmp_path):
    """JPEGs of many sizes (and greyscale, CMYK, 16-bit, EXIF-rotated ones) go through the model's eval
    preprocessing: train and eval read the folder as a stream, and eval counts every image."""
    from confidently.models import create_model, save_model

    from tests.photos import make_imagenet_folder

    root = make_imagenet_folder(tmp_path / "photos", train_per_class=4, val_per_class=2)
    torch.manual_seed(0)
    save_model(create_model("tiny_resnet", 3, img_size=32), tmp_path / "m.safetensors")
    trained = run_tool("unadv-patch", "train", "--model", "m.safetensors", "--data", root, "--split", "train",
                       "--patch-size", "6", "--steps", "3", "--batch-size", "5", "--workers", "1",
                       "--out", "p.safetensors", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert load_file(tmp_path / "p.safetensors")["patches"].shape == (3, 3, 6, 6)
    rows = run_tool("unadv-patch", "eval", "--model", "m.safetensors", "--data", root, "--split", "val",
                    "--patches", "p.safetensors", "--corruptions", "gaussian_noise", "--severities", "1",
                    "--batch-size", "3", "--workers", "0", cwd=tmp_path)
    assert rows.returncode == 0, rows.stderr
    assert [(r["arm"], r["corruption"]) for r in rows.records] == \
        [(arm, c) for arm in ("none", "random", "unadv") for c in ("clean", "gaussian_noise")]
    assert all(r["n"] == 3 * 2 + 4 for r in rows.records)  # the first class's val also holds the 4 odd photos
    packed = run_tool("dataset", "pack", root, "--out", root / "tars", "--shard-count", "3", "-q")
    assert packed.returncode == 0, packed.stderr
    from_tars = run_tool("unadv-patch", "train", "--model", "m.safetensors", "--data", root / "tars", "--split",
                         "train", "--patch-size", "6", "--steps", "3", "--batch-size", "5", "--workers", "2",
                         "--out", "q.safetensors", cwd=tmp_path)
    assert from_tars.returncode == 0, from_tars.stderr
    tar_rows = run_tool("unadv-patch", "eval", "--model", "m.safetensors", "--data", root / "tars", "--split", "val",
                        "--patches", "p.safetensors", "--corruptions", "gaussian_noise", "--severities", "1",
                        "--batch-size", "4", "--workers", "2", cwd=tmp_path)
    assert tar_rows.returncode == 0, tar_rows.stderr
    assert tar_rows.records == rows.records  # placements and noise per record: stream order does not matter


def test_a_timm_resnet_at_224_trains_and_evaluates_a_patch_on_photos(run_tool, tmp_path):
    """resnet18 (random weights) at its own size: photos of any size fitted to 224, a 48-pixel patch trained and
    evaluated on them through the same placements."""
    from confidently.models import create_model, save_model

    from tests.photos import make_imagenet_folder

    root = make_imagenet_folder(tmp_path / "photos", train_per_class=2, val_per_class=1)
    torch.manual_seed(0)
    save_model(create_model("resnet18", 3, img_size=224), tmp_path / "r18.safetensors")
    trained = run_tool("unadv-patch", "train", "--model", "r18.safetensors", "--data", root, "--split", "train",
                       "--patch-size", "48", "--steps", "2", "--batch-size", "4", "--workers", "0",
                       "--out", "p224.safetensors", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert load_file(tmp_path / "p224.safetensors")["patches"].shape == (3, 3, 48, 48)
    rows = run_tool("unadv-patch", "eval", "--model", "r18.safetensors", "--data", root, "--split", "val",
                    "--patches", "p224.safetensors", "--corruptions", "gaussian_noise", "--severities", "1",
                    "--batch-size", "4", "--workers", "0", cwd=tmp_path)
    assert rows.returncode == 0, rows.stderr
    assert len(rows.records) == 6 and all(r["n"] == 3 + 4 for r in rows.records)
