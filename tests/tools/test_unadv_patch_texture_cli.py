"""`unadv-patch texture | eval-texture | export` as a user runs them, and their bad-input exits."""

import pytest
from confidently.io.images import load_image
from confidently.unadversarial import load_texture

pytest.importorskip("mitsuba")
pytestmark = pytest.mark.render

VIEWS = ["--zoom-min", "2.5", "--zoom-max", "3", "--light-min", "1", "--light-max", "1", "--spp", "2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, trained_resnet):
    from confidently.models import save_model

    root = tmp_path_factory.mktemp("texture")
    save_model(trained_resnet, root / "model.safetensors")
    return root


def test_texture_eval_and_export(run_tool, model_dir):
    trained = run_tool("unadv-patch", "texture", "--model", "model.safetensors", "--mesh", "builtin:cube",
                       "--class-id", "1", "--tex-size", "8", "--steps", "8", "--batch-size", "4", "--lr", "0.08",
                       "--backgrounds", "black", *VIEWS, "--out", "tex.safetensors", cwd=model_dir)
    assert trained.returncode == 0, trained.stderr
    (summary,) = trained.records
    assert summary["cmd"] == "texture" and summary["class_id"] == 1 and summary["steps"] == 8
    texture, class_ids, meta = load_texture(model_dir / "tex.safetensors")
    assert texture.shape == (1, 3, 8, 8) and class_ids.tolist() == [1] and meta["config"]["grad"] == "ad"
    rows = run_tool("unadv-patch", "eval-texture", "--model", "model.safetensors", "--mesh", "builtin:cube",
                    "--texture", "tex.safetensors", "--views", "12", "--corruptions", "fog", "--severities", "2",
                    "--backgrounds", "black", "--seed", "4", *VIEWS, cwd=model_dir).records
    assert [(r["arm"], r["corruption"]) for r in rows] == [(a, c) for a in ("grey", "random", "unadv")
                                                            for c in ("clean", "fog")]
    assert all(r["n"] == 12 and abs(r["acc"] * 12 - round(r["acc"] * 12)) < 1e-9 for r in rows)  # a count of views
    by_arm = {(r["arm"], r["corruption"]): r["acc"] for r in rows}
    assert by_arm[("unadv", "clean")] >= by_arm[("grey", "clean")]  # the texture was trained for class 1
    exported = run_tool("unadv-patch", "export", "--texture", "tex.safetensors", "--out", "tex.png", cwd=model_dir)
    assert exported.returncode == 0, exported.stderr
    png = load_image(str(model_dir / "tex.png"))
    assert (png - texture[0]).abs().max() <= 0.5 / 255 + 1e-6  # lossless up to 8-bit rounding, rows as stored
    flipped = run_tool("unadv-patch", "export", "--texture", "tex.safetensors", "--out", "flip.png", "--flip-v",
                       cwd=model_dir)
    assert flipped.returncode == 0
    assert (load_image(str(model_dir / "flip.png")) - texture[0].flip(1)).abs().max() <= 0.5 / 255 + 1e-6


def test_bad_texture_inputs(run_in_process, model_dir):
    (model_dir / "flat.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    no_uv = run_in_process("unadv-patch", "texture", "--model", "model.safetensors", "--mesh", "flat.ply", "--class-id",
                     "1", "--steps", "1", "--out", "x.safetensors", cwd=model_dir)
    assert no_uv.returncode == 3 and "no UV coordinates" in no_uv.stderr
    wrong_class = run_in_process("unadv-patch", "texture", "--model", "model.safetensors", "--mesh", "builtin:cube",
                           "--class-id", "12", "--steps", "1", "--out", "x.safetensors", cwd=model_dir)
    assert wrong_class.returncode == 2 and "10 classes" in wrong_class.stderr
    import torch
    from confidently.unadversarial import save_texture

    save_texture(model_dir / "other.safetensors", torch.rand(1, 3, 8, 8), [40], {})
    mismatched = run_in_process("unadv-patch", "eval-texture", "--model", "model.safetensors", "--mesh", "builtin:cube",
                          "--texture", "other.safetensors", cwd=model_dir)
    assert mismatched.returncode == 3 and "classes [40]" in mismatched.stderr
    lossy = run_in_process("unadv-patch", "export", "--texture", "other.safetensors", "--out", "t.jpg", cwd=model_dir)
    assert lossy.returncode == 2 and "PNG" in lossy.stderr
