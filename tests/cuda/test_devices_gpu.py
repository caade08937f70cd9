"""The same work on the GPU and on the CPU agrees, and the GPU-only settings (fp16, Mitsuba's cuda_ad_rgb) run."""

from __future__ import annotations

import json

import pytest

from tests.cuda.conftest import run

DIGITS16 = "demo:digits?size=16"


def records(done) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Models trained on the CPU (so both devices meet the same weights) and 32 exported test digits."""
    root = tmp_path_factory.mktemp("gpu-vs-cpu")
    run("advtrain", "train", "--data", DIGITS16, "--split", "train", "--arch", "tiny_resnet", "--epochs", "2",
        "--eps", "0.5", "--device", "cpu", "--out", "robust.safetensors", cwd=root)
    run("certify", "fit", "--data", DIGITS16, "--split", "train", "--arch", "tiny_resnet", "--img-size", "16",
        "--ablation-size", "4", "--pretrain-epochs", "1", "--epochs", "1", "--device", "cpu",
        "--out", "base.safetensors", cwd=root)
    digits = run("dataset", "export", DIGITS16, "--split", "test", "--limit", "32", "--out", "digits", cwd=root)
    (root / "digits.jsonl").write_text(digits.stdout)
    return root


def test_advtrain_eval_agrees_across_devices(folder, device):
    by_device = {}
    for where in ("cpu", device):
        done = run("advtrain", "eval", "--model", "robust.safetensors", "--data", DIGITS16, "--split", "test",
                   "--eps", "0,0.5", "--steps", "5", "--device", where, cwd=folder)
        by_device[where] = {r["eps"]: r for r in records(done)}
    for eps, on_cpu in by_device["cpu"].items():
        on_device = by_device[device][eps]
        assert abs(on_cpu["nat_acc"] - on_device["nat_acc"]) <= 0.01
        assert abs(on_cpu["adv_acc"] - on_device["adv_acc"]) <= 0.02  # PGD's float round-off may flip a few


def test_certify_run_agrees_across_devices(folder, device):
    manifest = (folder / "digits.jsonl").read_text()
    by_device = {}
    for where in ("cpu", device):
        done = run("certify", "run", "-", "--model", "base.safetensors", "--patch-sizes", "1,2", "--device", where,
                   input=manifest, cwd=folder)
        by_device[where] = {r["id"]: r["certify"]["pred"] for r in records(done)}
    assert len(by_device["cpu"]) == 32
    same = sum(pred == by_device[device][key] for key, pred in by_device["cpu"].items())
    assert same >= 0.9 * len(by_device["cpu"])  # float round-off may flip a vote, rarely a prediction


def test_immunize_in_fp16_with_batches_on_the_gpu(folder, device):
    run("immunize", "tiny-model", "--out", "tiny-ldm", "--size", "32", "--unet", "img2img", cwd=folder)
    photos = run("dataset", "export", "demo:photos", "--size", "32", "--crop", "--limit", "3", "--out", "photos",
                 cwd=folder)
    (folder / "photos.jsonl").write_text(photos.stdout)
    dtype = "fp16" if device == "cuda" else "fp32"
    done = run("immunize", "encoder", "photos.jsonl", "--model-dir", "tiny-ldm", "--eps", "16/255", "--step",
               "2/255", "--steps", "5", "--batch-size", "3", "--dtype", dtype, "--device", device,
               "--out-dir", "immunized", cwd=folder)
    rows = records(done)
    assert len(rows) == 3 and all(r["linf_png"] <= 16 / 255 and r["loss_final"] < r["loss_init"] for r in rows)


def test_a_texture_through_mitsubas_device_variant(folder, device):
    pytest.importorskip("mitsuba")
    run("advtrain", "train", "--data", "demo:shapes", "--split", "train", "--arch", "tiny_resnet", "--epochs", "1",
        "--device", device, "--out", "shapes.safetensors", cwd=folder)
    done = run("unadv-patch", "texture", "--model", "shapes.safetensors", "--mesh", "builtin:cube", "--class-id",
               "3", "--tex-size", "16", "--steps", "2", "--batch-size", "2", "--grad", "ad", "--device", device,
               "--backgrounds", "demo:photos", "--out", "texture.safetensors", cwd=folder)
    assert records(done) and (folder / "texture.safetensors").exists()


@pytest.mark.parametrize("renderer", ["bpy", "mitsuba"])
def test_render_3db_path_traces_on_the_device(folder, device, renderer):
    """Cycles (OptiX/CUDA) and Mitsuba (cuda_ad_rgb) on the GPU render what they render on the CPU, up to noise."""
    pytest.importorskip({"bpy": "bpy", "mitsuba": "mitsuba"}[renderer])
    from confidently.io.images import load_image

    (folder / "scene.yaml").write_text(
        "objects: [{id: mug, builtin: mug, label: 5, color: [0.8, 0.3, 0.2]}]\n"
        "environments: [{id: grey, solid: [0.6, 0.6, 0.6]}]\n"
        f"render_args: {{engine: {renderer}, resolution: 32, samples: 64}}\n"
        "policy: {module: grid, samples_per_dim: 2}\n"
        "controls:\n"
        "  - {module: orientation, rotation_x: 0.2, rotation_y: 0, rotation_z: [0, 1.5]}\n")
    images = {}
    for where in dict.fromkeys(("cpu", device)):
        run("render-3db", "run", "scene.yaml", "--no-eval", "--device", where, "--images-dir", f"{renderer}-{where}",
            "--out", f"{renderer}-{where}.jsonl", cwd=folder)
        images[where] = [load_image(str(path)) for path in sorted((folder / f"{renderer}-{where}").glob("*.png"))]
    assert len(images["cpu"]) == 2
    for on_cpu, on_device in zip(images["cpu"], images[device], strict=True):
        assert float((on_cpu - on_device).abs().mean()) < 0.05  # same scene; only the sampling noise differs
