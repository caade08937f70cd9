"""SDXL directories: both text encoders, the UNet's pooled embeddings and time ids, the SDXL pipelines, on the tiny
SDXL that `immunize tiny-model --family sdxl` writes (img2img: SDXL base's layout; inpaint here with the refiner's
aesthetic score, 5 time ids instead of 6)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import EditConfig, HashTextEncoder, conditioning, edit_image, load_ldm
from confidently.immunize.sdxl import check_tiny_sdxl, is_sdxl, unet_kwargs, write_tiny_sdxl
from confidently.immunize.text import DualClipText, load_prompt_embeds
from confidently.io.images import load_image, save_image

from tests.conftest import tool_path
from tests.immunize.conftest import blobs, centre_mask
from tests.immunize.test_pipelines import TOLERANCE, both_backends
from tests.tools.test_immunize_cli import in_process


@pytest.fixture(scope="module")
def sdxl_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sdxl")
    return {"img2img": write_tiny_sdxl(root / "img2img", size=32, unet="img2img"),
            "inpaint": write_tiny_sdxl(root / "inpaint", size=32, unet="inpaint", aesthetics=True)}


@pytest.fixture(scope="module")
def sdxl(sdxl_dirs):
    return {mode: load_ldm(path) for mode, path in sdxl_dirs.items()}


@pytest.mark.parametrize("unet", ["img2img", "inpaint"])
@pytest.mark.parametrize("negative,strength,eta", [("", None, 1.0), ("blurry", 0.75, 0.0)])
def test_own_loop_pipeline_and_diffusers_own_text_encoding_make_the_same_edit(unet, negative, strength, eta, sdxl,
                                                                               sdxl_dirs):
    """The own loop (the attack's) and --backend pipeline (StableDiffusionXL*Pipeline fed our embeddings) agree;
    and diffusers' pipeline loaded from the directory with its own text encoders and prompt strings makes the same
    edit, so the prompt embeddings, pooled embeddings, zeroed empty negative prompt and time ids are the ones
    diffusers computes."""
    import diffusers

    model = sdxl[unet]
    assert is_sdxl(model) and isinstance(model.text, DualClipText)
    x, mask = blobs(1, seed=4)[0], centre_mask()[0]
    cond = conditioning(model.text, "a red car", negative)
    assert cond.cond.shape == (1, 16, 32) and cond.pooled.shape == cond.uncond_pooled.shape == (1, 16)
    assert bool((cond.uncond == 0).all()) == (negative == "")  # force_zeros_for_empty_prompt
    config = EditConfig(unet, steps=6, guidance=7.5, eta=eta, strength=strength)
    own, pipe = both_backends(model, x, cond, config, mask)
    assert own.shape == pipe.shape == x.shape
    assert float((own - pipe).abs().max()) <= TOLERANCE
    other = edit_image(model, x, cond, config, seed=12, mask=mask, paste=False, backend="pipeline")
    assert float((other - pipe).abs().max()) > 100 * TOLERANCE

    reference = getattr(diffusers, model.pipelines[unet].__class__.__name__).from_pretrained(
        str(sdxl_dirs[unet]), local_files_only=True)
    assert reference.config.requires_aesthetics_score == (unet == "inpaint")
    reference.scheduler = model.new_scheduler()  # DDIM from the directory's Euler config, as both backends
    reference.set_progress_bar_config(disable=True)
    extra = {"mask_image": mask, "height": 32, "width": 32} if unet == "inpaint" else {}
    theirs = reference(prompt="a red car", negative_prompt=negative or None, image=x[None], num_inference_steps=6,
                       strength=config.effective_strength, eta=eta, guidance_scale=7.5, output_type="pt",
                       generator=torch.Generator().manual_seed(11), **extra).images[0]
    assert float((theirs - pipe).abs().max()) <= TOLERANCE


def test_a_batch_of_photos_gets_its_pooled_embeddings_and_time_ids_in_the_pipelines_order(sdxl):
    """Two photos in one call: [uncond × 2, cond × 2] for the prompt embeddings, pooled embeddings and time ids
    alike, as StableDiffusionXLInpaintPipeline batches them (another order pairs a photo with the wrong branch)."""
    from confidently.immunize.editing import own_edit
    from confidently.immunize.pipelines import pipeline_edit

    model = sdxl["inpaint"]
    pixels, mask = blobs(2, seed=6), centre_mask().repeat(2, 1, 1, 1)
    cond, config = conditioning(model.text, "a red car", "blurry"), EditConfig("inpaint", steps=3)
    own, pipe = (edit(model, pixels, cond, config, torch.Generator().manual_seed(3), mask)
                 for edit in (own_edit, pipeline_edit))
    assert own.shape == (2, 3, 32, 32) and float((own - pipe).abs().max()) <= TOLERANCE


def test_sdxl_conditioning_is_checked_and_a_plain_directory_loads_as_before(sdxl, sdxl_dirs, ldm, tmp_path,
                                                                             monkeypatch):
    model, x = sdxl["img2img"], blobs(1, seed=5)[0]
    config = EditConfig("img2img", steps=2)
    embeds = conditioning(model.text, "a dog", "")
    plain_embeds = {"prompt_embeds": embeds.cond, "negative_prompt_embeds": embeds.uncond}
    without_pooled = conditioning(None, "", embeds=plain_embeds)
    for backend in ("own", "pipeline"):
        with pytest.raises(InvalidInput, match="SDXL model: its UNet needs the pooled text embeddings"):
            edit_image(model, x, without_pooled, config, seed=0, backend=backend)
    precomputed = conditioning(None, "", embeds={**plain_embeds, "pooled_prompt_embeds": embeds.pooled,
                                                 "negative_pooled_prompt_embeds": embeds.uncond_pooled})
    assert torch.equal(edit_image(model, x, precomputed, config, seed=0, backend="own"),
                       edit_image(model, x, embeds, config, seed=0, backend="own"))
    from safetensors.torch import save_file

    save_file({"prompt_embeds": embeds.cond, "pooled_prompt_embeds": embeds.pooled[0]}, str(tmp_path / "e.safetensors"))
    assert load_prompt_embeds(tmp_path / "e.safetensors")["pooled_prompt_embeds"].shape == (1, 16)
    save_file({"prompt_embeds": embeds.cond, "pooled_prompt_embeds": embeds.cond.clone()},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(InvalidInput, match="expected 1×P"):
        load_prompt_embeds(tmp_path / "bad.safetensors")
    # the aesthetic-score flag decides 5 or 6 time ids; the UNet's add_embedding says which it was trained with
    flipped = shutil.copytree(sdxl_dirs["img2img"], tmp_path / "flipped")
    index = json.loads((flipped / "model_index.json").read_text())
    (flipped / "model_index.json").write_text(json.dumps({**index, "requires_aesthetics_score": True}))
    with pytest.raises(InvalidInput, match="requires_aesthetics_score"):
        edit_image(load_ldm(flipped, parts=("vae", "unet", "scheduler")), x, embeds, config, seed=0, backend="own")
    # the second text encoder's weights as a pickle are refused like the first's, before anything unpickles
    from safetensors.torch import load_file

    second = flipped / "text_encoder_2"
    torch.save(load_file(str(second / "model.safetensors")), second / "pytorch_model.bin")
    (second / "model.safetensors").unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without --trust-pickle"))
    with pytest.raises(InvalidInput, match=r"text_encoder_2/pytorch_model\.bin is a pickle"):
        load_ldm(flipped)
    # an SD 1.5-layout directory: one text encoder, no added conditioning, the SD pipelines
    assert not is_sdxl(ldm) and isinstance(ldm.text, HashTextEncoder)
    plain = conditioning(ldm.text, "a dog", "")
    assert plain.pooled is None and unet_kwargs(ldm, plain, 1, 32, 32, True) == {}
    edit_image(ldm, x, plain, EditConfig("inpaint", steps=2), seed=0, mask=centre_mask()[0], backend="pipeline")
    assert type(ldm.pipelines["inpaint"]).__name__ == "StableDiffusionInpaintPipeline"
    with pytest.raises(UsageError, match="tiny scale only"):
        check_tiny_sdxl(32, "img2img", "sd15")
    # SDXL's VAE overflows in fp16: refused before any weight loads, with the dtypes that work
    with pytest.raises(UsageError, match="overflows in fp16.*--dtype bf16"):
        load_ldm(sdxl_dirs["img2img"], weights_dtype="fp16")
    assert load_ldm(sdxl_dirs["img2img"], parts=("vae",), weights_dtype="bf16").vae.dtype == torch.bfloat16


def test_encoder_and_diffusion_attacks_then_edit_in_a_pipe(tmp_path, monkeypatch, capsys):
    """`immunize tiny-model --family sdxl`, the encoder attack (VAE only) on one photo and the diffusion attack
    (through the own loop's SDXL UNet call) on another, piped into `immunize edit` (StableDiffusionXLImg2ImgPipeline).
    tiny-model and encoder run in this process (each real process pays seconds of diffusers imports); the diffusion
    attack and the edit are real processes in a real pipe."""
    for index in range(2):
        save_image(blobs(1, seed=10 + index)[0], tmp_path / f"p{index}.png")
        (tmp_path / f"m{index}.jsonl").write_text(json.dumps({"id": f"p{index}", "image": f"p{index}.png",
                                                              "prompt": "a red car"}) + "\n")
    code, out, err = in_process(["tiny-model", "--out", "sdxl", "--unet", "img2img", "--family", "sdxl"], "",
                                tmp_path, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["family"] == "sdxl", err
    code, encoded, err = in_process(["encoder", "m0.jsonl", "--model-dir", "sdxl", "--out-dir", "enc", "--steps", "5"],
                                    "", tmp_path, monkeypatch, capsys)
    assert code == 0, err
    (tmp_path / "enc.jsonl").write_text(encoded)
    tool = shlex.quote(tool_path("immunize"))
    command = (f"set -o pipefail; {{ cat enc.jsonl && {tool} diffusion m1.jsonl --model-dir sdxl --out-dir diff "
               f"--steps 2 --attack-denoise-steps 4 --grad-reps 1; }} | {tool} edit --model-dir sdxl --out-dir edits "
               "--steps 4")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["id"], r["method"], r["mode"]) for r in rows] == [("p0", "encoder", "img2img"),
                                                                 ("p1", "diffusion", "img2img")]
    assert rows[0]["loss_final"] < rows[0]["loss_init"]
    assert rows[1]["attack_denoise_steps"] == 2 and all(torch.isfinite(torch.tensor(r["loss_final"])) for r in rows)
    for row in rows:
        original, immunized = (load_image(str(tmp_path / row[key])) for key in ("image", "immunized"))
        assert 0 < float((immunized - original).abs().max()) <= 16 / 255 + 1e-6
        clean, attacked = (load_image(str(tmp_path / row[key])) for key in ("edit_clean", "edit_immunized"))
        assert clean.shape == attacked.shape == (3, 32, 32) and not torch.equal(clean, attacked)
    assert "Loading weights" not in proc.stderr and "kept in float32" not in proc.stderr
