"""`immunize` as a user runs it: real executables in real pipes on a tiny random model (32×32)."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from confidently.immunize import fit_image
from confidently.immunize.pixels import to_uint8
from confidently.io.artifacts import load_artifact, load_artifact_metadata
from confidently.io.images import load_image, save_image
from confidently.schema import schema_errors
from safetensors.torch import save_file

from tests.conftest import tool_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}
IMMUNIZE = tool_path("immunize")


def start(args: list[str], cwd: Path, stdin: str = "") -> subprocess.Popen:
    proc = subprocess.Popen([IMMUNIZE, *args], cwd=cwd, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(stdin)
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.stdout.read(), proc.stderr.read()
    return proc.wait(timeout=300), out, err


def run_all(cases: list[tuple[list[str], str]], cwd: Path) -> list[tuple[int, str, str]]:
    """Run several invocations side by side (each pays the diffusers import once)."""
    procs = [start(args, cwd, stdin) for args, stdin in cases]
    return [finish(proc) for proc in procs]


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Two 40×48 photos (resized to 32 by --size auto), a matching mask, a manifest, and `immunize tiny-model`."""
    root = tmp_path_factory.mktemp("immunize-cli")
    (root / "photos").mkdir()
    generator = torch.Generator().manual_seed(0)
    lines = []
    for index in range(2):
        small = torch.rand(1, 3, 4, 4, generator=generator)
        image = torch.nn.functional.interpolate(small, size=(40, 48), mode="bicubic").clamp(0, 1)[0]
        save_image(image, root / "photos" / f"p{index}.png")
        lines.append({"id": f"photo/{index}", "image": f"p{index}.png", "mask": "mask.png",
                      "prompt": "a red car on a road", "note": {"keep": index}})
    mask = torch.zeros(1, 40, 48)
    mask[:, 10:30, 12:36] = 1
    save_image(mask, root / "photos" / "mask.png")
    save_image(torch.zeros(1, 20, 20), root / "photos" / "small-mask.png")
    (root / "photos" / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = finish(start(["tiny-model", "--out", "tiny"], root))
    assert code == 0, err
    assert records(out)[0]["model_dir"] == "tiny"
    assert (root / "tiny" / "vae" / "config.json").is_file() and (root / "tiny" / "toy_text").is_dir()
    return root


def test_encoder_then_edit_in_a_pipe(work):
    command = (f"set -o pipefail; {shlex.quote(IMMUNIZE)} encoder --model-dir tiny --out-dir imm --steps 20 "
               f"photos/manifest.jsonl | {shlex.quote(IMMUNIZE)} edit --model-dir tiny --out-dir edits --steps 3 "
               f"--transform jpeg:75")
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = records(proc.stdout)
    assert [r["id"] for r in rows] == ["photo/0", "photo/1"]
    for index, row in enumerate(rows):
        assert schema_errors(row, "immunize-record") == [] and schema_errors(row, "image-record") == []
        assert row["note"] == {"keep": index} and row["prompt"] == "a red car on a road"  # unknown fields kept
        assert row["image"] == f"photos/p{index}.png"  # rebased to the working directory
        assert row["method"] == "encoder" and row["mode"] == "inpaint" and row["guarantee"] == "none"
        assert row["loss_final"] < row["loss_init"] and row["size"] == [32, 32] and row["resized"]
        # the saved file keeps the bound against the (resized, 8-bit) original and leaves the mask region alone
        original = to_uint8(fit_image(load_image(str(work / row["image"])), 32)).int()
        immunized = to_uint8(load_image(str(work / row["immunized"]))).int()
        mask = fit_image(load_image(str(work / "photos/mask.png"), channels=1), 32, nearest=True)[0] > 0.5
        assert int((immunized - original).abs().max()) <= 16 and row["linf_png"] <= 16 / 255
        assert int((immunized - original)[:, mask].abs().max()) == 0
        assert int((immunized - original)[:, ~mask].abs().max()) == 16
        tensors, meta = load_artifact(work / row["tensors"])
        assert schema_errors(meta, "artifact-metadata") == [] and meta["method"] == "encoder"
        assert set(tensors) >= {"x", "x_adv", "delta", "mask", "z_target", "z_adv", "loss"}
        assert tensors["loss"].shape == (20,) and float(tensors["delta"].abs().max()) <= 16 / 255 + 1e-6
        # edits: clean and immunized with the same seed, the kept region pasted back, a JPEG variant
        assert row["kind"] == "immunize.edited" and row["edit_config"]["scheduler"] == "DDIMScheduler"
        for key in ("edit_clean", "edit_immunized", "edit_immunized_jpeg_75"):
            assert (work / row[key]).is_file()
        # the kept region of every edit is the original photo's (PhotoGuard's recover_image), not the immunized one's
        for key in ("edit_clean", "edit_immunized", "edit_immunized_jpeg_75"):
            edited = to_uint8(load_image(str(work / row[key]))).int()
            assert torch.equal(edited[:, ~mask], original[:, ~mask]), key
        assert row["edit_config"]["denoised_steps"] == 3
        assert load_artifact_metadata(work / row["edit_tensors"])["kind"] == "edits"


def in_process(args: list[str], stdin: str, cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """The same CLI code without a new interpreter (diffusers takes seconds to import on a busy box)."""
    from confidently.cli import run_app
    from confidently_tools.immunize import app

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_app(app, "immunize", args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_random_and_diffusion_subcommands(work, monkeypatch, capsys):
    manifest = str(work / "photos" / "manifest.jsonl")
    code, out, err = in_process(["random", "--model-dir", "tiny", "--out-dir", "rand", "--eps", "8/255",
                                 "--size", "32", manifest], "", work, monkeypatch, capsys)
    assert code == 0, err
    for row in records(out):
        assert row["method"] == "random" and row["eps"] == pytest.approx(8 / 255) and row["linf_png"] <= 8 / 255
    # --resume: finished records with the same settings are reused, others recomputed
    args = ["random", "--model-dir", "tiny", "--out-dir", "rand", "--eps", "8/255", "--size", "32", manifest]
    code, again, err = in_process([*args, "--resume"], "", work, monkeypatch, capsys)
    assert code == 0 and err.count("reused") == 2, err
    assert again == out
    code, other, err = in_process([*args[:-1], "--seed", "3", "--resume", manifest], "", work, monkeypatch, capsys)
    assert code == 0 and "reused" not in err and other != out
    # a preset fills what the flags leave unset
    code, out, err = in_process(["encoder", "--model-dir", "tiny", "--out-dir", "preset", "--size", "32",
                                 "--preset", "photoguard-demo", "--steps", "2", manifest], "", work, monkeypatch,
                                capsys)
    assert code == 0, err
    row = records(out)[0]
    assert (row["eps"], row["steps"], row["random_start"], row["step_schedule"]) == (0.06, 2, True, "linear")
    first = json.dumps({**records((work / "photos" / "manifest.jsonl").read_text())[0], "image": "photos/p0.png",
                        "mask": "photos/mask.png"}) + "\n"
    code, out, err = in_process(["diffusion", "--model-dir", "tiny", "--out-dir", "diff", "--steps", "3",
                                 "--grad-reps", "1", "--attack-denoise-steps", "2", "--eot-noise", "fixed",
                                 "--size", "32", "--random-start"], first, work, monkeypatch, capsys)
    assert code == 0, err
    (row,) = records(out)
    assert row["method"] == "diffusion" and row["attack_denoise_steps"] == 2 and row["checkpointing"]
    assert row["attack_denoise_steps_requested"] == 2 and row["attack_strength"] == 1.0
    assert schema_errors(row, "immunize-record") == []
    assert row["loss_final"] is not None and row["linf"] <= 16 / 255 + 1e-6


def test_img2img_diffusion_attack_records_the_steps_it_unrolled(work, monkeypatch, capsys):
    from confidently.immunize import write_tiny_model

    if not (work / "tiny-i2i").exists():
        write_tiny_model(work / "tiny-i2i", size=32, unet="img2img", seed=0)
    plain = json.dumps({"id": "x", "image": "photos/p0.png"}) + "\n"
    code, out, err = in_process(["diffusion", "--model-dir", "tiny-i2i", "--out-dir", "diff-i2i", "--steps", "1",
                                 "--grad-reps", "1", "--attack-denoise-steps", "4"], plain, work, monkeypatch, capsys)
    assert code == 0, err
    (row,) = records(out)
    assert row["mode"] == "img2img" and row["attack_strength"] == 0.5  # ⌊4 · 0.5⌋ steps unrolled, not 4
    assert (row["attack_denoise_steps"], row["attack_denoise_steps_requested"]) == (2, 4)
    assert schema_errors(row, "immunize-record") == []


def test_edit_of_the_immunized_field_alone_on_resized_photos(work, monkeypatch, capsys):
    """Photos of 40×48 immunized at 32×32: the mask belongs to the photo, and the photo is pasted back."""
    manifest = str(work / "photos" / "manifest.jsonl")
    code, immunized, err = in_process(["random", "--model-dir", "tiny", "--out-dir", "rand-alone", manifest], "",
                                      work, monkeypatch, capsys)
    assert code == 0, err
    code, out, err = in_process(["edit", "--model-dir", "tiny", "--out-dir", "edit-alone", "--steps", "2",
                                 "--fields", "immunized"], immunized, work, monkeypatch, capsys)
    assert code == 0, err
    mask = fit_image(load_image(str(work / "photos/mask.png"), channels=1), 32, nearest=True)[0] > 0.5
    for row in records(out):
        assert "edit_clean" not in row and row["resized"]
        original = to_uint8(fit_image(load_image(str(work / row["image"])), 32)).int()
        edited = to_uint8(load_image(str(work / row["edit_immunized"]))).int()
        assert torch.equal(edited[:, ~mask], original[:, ~mask])


def test_lossy_webp_output_is_real_webp(work, monkeypatch, capsys):
    plain = json.dumps({"id": "x", "image": "photos/p0.png"}) + "\n"
    code, out, err = in_process(["random", "--model-dir", "tiny", "--out-dir", "webp", "--format", "webp",
                                 "--allow-lossy"], plain, work, monkeypatch, capsys)
    assert code == 0, err
    (row,) = records(out)
    head = (work / row["immunized"]).read_bytes()[:12]
    assert row["immunized"].endswith(".webp") and row["lossy"]
    assert head[:4] == b"RIFF" and head[8:12] == b"WEBP", head


def test_bad_inputs_exit_with_clear_messages(work, monkeypatch, capsys):
    one = json.loads((work / "photos" / "manifest.jsonl").read_text().splitlines()[0])
    one.update(image="photos/p0.png", mask="photos/mask.png")
    plain = json.dumps({"id": "x", "image": "photos/p0.png"}) + "\n"
    # two through the installed executable, side by side
    results = run_all([(["encoder", "--model-dir", "tiny", "--out-dir", "bad", "--eps", "0"], plain),
                       (["encoder", "--model-dir", "photos", "--out-dir", "bad"], plain)], work)
    assert results[0][0] == 2 and "(0, 1]" in results[0][2], results[0][2]
    assert results[1][0] == 3 and "lacks vae/config.json" in results[1][2], results[1][2]
    no_text = work / "no-text"
    if not no_text.exists():
        shutil.copytree(work / "tiny", no_text)
        shutil.rmtree(no_text / "toy_text")
    save_file({"x": torch.rand(3, 31, 32)}, str(work / "odd.safetensors"))
    save_image(torch.rand(3, 32, 32), work / "immunized-32.png")
    immunized_32 = json.dumps({**one, "immunized": "immunized-32.png"}) + "\n"
    encoder = ["encoder", "--model-dir", "tiny", "--out-dir", "bad", "--steps", "1"]
    cases = {
        "eps above one": (["random", "--model-dir", "tiny", "--out-dir", "bad", "--eps", "1.5"], plain, 2, "(0, 1]"),
        "lossy output": ([*encoder, "--format", "jpg"], plain, 2, "--allow-lossy"),
        "mask size": (encoder, json.dumps({**one, "mask": "photos/small-mask.png"}) + "\n", 3, "mask is 20×20"),
        "not divisible": ([*encoder, "--size", "0"],
                          json.dumps({"id": "odd", "image": {"tensors": "odd.safetensors", "key": "x"}}) + "\n",
                          3, "downsampling factor 2"),
        "size not a multiple": ([*encoder, "--size", "33"], plain, 2, "multiple of the model's downsampling"),
        "no text encoder": (["edit", "--model-dir", "no-text", "--out-dir", "bad", "--steps", "1",
                             "--fields", "image"], json.dumps(one) + "\n", 3, "--prompt-embeds"),
        "inpaint without mask": (["edit", "--model-dir", "tiny", "--out-dir", "bad", "--steps", "1"], plain, 3,
                                 "needs a mask"),
        "two methods in one edit": (["edit", "--model-dir", "tiny", "--out-dir", "bad", "--steps", "1",
                                     "--fields", "image"], 2 * (json.dumps(one) + "\n"), 3, "in its own run"),
        "immunized of another size": (["edit", "--model-dir", "tiny", "--out-dir", "bad", "--steps", "1",
                                       "--size", "16"], immunized_32, 3,
                                      "'photo/0': immunized is 32×32 but its photo is edited at 16×16"),
        "paste-back without the photo": (["edit", "--model-dir", "tiny", "--out-dir", "bad", "--steps", "1",
                                          "--fields", "immunized"],
                                         json.dumps({"id": "y", "immunized": "immunized-32.png",
                                                     "mask": "photos/mask.png"}) + "\n", 3, "needs its \"image\""),
    }
    for name, (args, stdin, expected, message) in cases.items():
        code, _, err = in_process(args, stdin, work, monkeypatch, capsys)
        assert code == expected, f"{name}: exit {code}, stderr: {err}"
        assert message in err, f"{name}: {err}"


def test_edit_backends_agree_and_an_fp16_variant_loads(work, monkeypatch, capsys):
    """`--backend pipeline` (default: diffusers' StableDiffusionInpaintPipeline) and `--backend own` write the same
    edits for the same seed; `--variant fp16 --dtype fp16` loads diffusion_pytorch_model.fp16.safetensors."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    manifest = str(work / "photos" / "manifest.jsonl")
    outputs = {}
    for backend in ("pipeline", "own"):
        code, out, err = in_process(["edit", "--model-dir", "tiny", "--out-dir", f"edit-{backend}", "--steps", "3",
                                     "--fields", "image", "--backend", backend, manifest], "", work, monkeypatch,
                                    capsys)
        assert code == 0, err
        outputs[backend] = records(out)
        assert all(row["edit_config"]["backend"] == backend for row in outputs[backend])
    for pipe, own in zip(outputs["pipeline"], outputs["own"], strict=True):
        a, b = load_artifact(work / pipe["edit_tensors"])[0], load_artifact(work / own["edit_tensors"])[0]
        assert float((a["edit_clean"] - b["edit_clean"]).abs().max()) <= 1e-5
    fp16 = shutil.copytree(work / "tiny", work / "tiny-fp16")
    for name, cls in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel)):
        module = cls.from_pretrained(str(fp16), subfolder=name, local_files_only=True).to(torch.float16)
        module.save_pretrained(str(work / "fp16-save" / name), variant="fp16")
        shutil.move(work / "fp16-save" / name / "diffusion_pytorch_model.fp16.safetensors", fp16 / name)
        (fp16 / name / "diffusion_pytorch_model.safetensors").unlink()
    args = ["edit", "--model-dir", "tiny-fp16", "--out-dir", "edit-fp16", "--steps", "3", "--fields", "image",
            manifest]
    code, out, err = in_process(args, "", work, monkeypatch, capsys)
    assert code == 3 and "cannot load vae" in err  # the default files are gone
    code, out, err = in_process([*args, "--variant", "fp16", "--dtype", "fp16"], "", work, monkeypatch, capsys)
    assert code == 0, err
    rows = records(out)
    assert rows[0]["edit_config"]["dtype"] == "float32"  # fp16 autocast is for CUDA; a CPU computes in fp32
    fingerprints = {load_artifact_metadata(work / row["edit_tensors"])["model_fingerprint"]
                    for row in (rows[0], outputs["own"][0])}
    assert len(fingerprints) == 2  # the fp16 weights are another model than the fp32 ones
    code, out, err = in_process(["edit", "--model-dir", "tiny", "--out-dir", "edit-bad", "--backend", "comfy",
                                 manifest], "", work, monkeypatch, capsys)
    assert code == 2 and "--backend" in err


def test_a_transform_alone_shows_no_protection(work):
    """δ = 0 (the 'immunized' photo is the photo): edited after blur or rotation, it must score as identical to
    its control, the clean photo edited after the same transform; against the untransformed clean edit the
    transform alone would have looked like protection."""
    from confidently.immunize.metrics import score_pairs

    lines = [json.loads(line) for line in (work / "photos" / "manifest.jsonl").read_text().splitlines()]
    (work / "photos" / "no-delta.jsonl").write_text(
        "".join(json.dumps({**line, "immunized": line["image"]}) + "\n" for line in lines))
    command = (f"set -o pipefail; {shlex.quote(IMMUNIZE)} edit photos/no-delta.jsonl --model-dir tiny "
               "--out-dir edits-no-delta --size 0 --steps 2 --no-paste-back --transform blur:1,rotate:10 -q "
               f"| tee edited-no-delta.jsonl | {shlex.quote(IMMUNIZE)} score --metrics ssim,psnr "
               "--transforms blur:1,rotate:10")
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = records(proc.stdout)
    edited = records((work / "edited-no-delta.jsonl").read_text())
    for row in edited:
        assert schema_errors(row, "immunize-record") == []
        assert row["edit_config"]["transforms"] == ["blur:1", "rotate:10"]
        for key in ("edit_clean_blur_1", "edit_immunized_blur_1", "edit_clean_rotate_10",
                    "edit_immunized_rotate_10"):
            assert (work / row[key]).is_file()
    scored = [r for r in rows if r["kind"] == "immunize.scored"]
    assert len(scored) == 2
    for row in scored:
        assert row["metrics"]["ssim"] == pytest.approx(1) and row["metrics"]["psnr"] >= 60
        for spec in ("blur:1", "rotate:10"):
            assert row["metrics_transformed"][spec]["ssim"] == pytest.approx(1), spec  # no protection
            assert row["metrics_transformed"][spec]["psnr"] >= 60, spec
    (summary_blur,) = [r for r in rows if r["kind"] == "immunize.summary" and r["transform"] == "blur:1"]
    assert summary_blur["ref"] == "edit_clean_blur_1" and summary_blur["ssim"]["mean"] == pytest.approx(1)
    # the old pairing (transformed immunized vs untransformed clean) credits the rotation alone with a difference
    # (small here: a tiny random model's edits barely depend on their input), the control pairing with none
    old_way, _ = score_pairs(load_image(str(work / edited[0]["edit_clean"])),
                             load_image(str(work / edited[0]["edit_immunized_rotate_10"])), ["ssim", "psnr"])
    assert old_way["ssim"][0] < 1 - 1e-4 and old_way["psnr"][0] < 60

    # a transformed edit without its control (an edit made before controls existed) is refused, saying how to fix it
    stale = {key: value for key, value in edited[0].items() if not key.startswith("edit_clean_")}
    command = f"{shlex.quote(IMMUNIZE)} score --metrics ssim --transforms blur:1"
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=ENV, input=json.dumps(stale) + "\n",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "edit_clean_blur_1" in proc.stderr and "immunize edit --transform blur:1" in proc.stderr
