"""`immunize edit --backend pipeline` (diffusers' own pipelines) against the own differentiable loop, and loading
what a user downloaded: fp16 variants, pickles, fingerprints of the weights."""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager

import pytest
import torch
from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.immunize import EditConfig, conditioning, edit_image, load_ldm, model_fingerprint, write_tiny_model

from tests.immunize.conftest import blobs, centre_mask

# On CPU in fp32 the two backends agree bit for bit (both draw from one CPU generator in the same order and run
# the same modules); the tolerance leaves room for kernels that reorder sums (GPU, another torch) and for the own
# loop skipping classifier-free guidance when prompt and negative prompt embed the same (ε_u + g·(ε_u − ε_u) = ε_u,
# computed on a batch of 1 instead of 2).
TOLERANCE = 1e-5


def both_backends(model, x, cond, config, mask=None, seed=11):
    """(own loop's edit, pipeline's edit) of the same photo with the same seed and config, not pasted back."""
    return tuple(edit_image(model, x, cond, config, seed=seed, mask=mask, paste=False, backend=backend)
                 for backend in ("own", "pipeline"))


@pytest.mark.parametrize("unet", ["inpaint", "img2img"])
@pytest.mark.parametrize("strength,eta,prompt", [(None, 1.0, "a red car"), (0.75, 1.0, "a red car"),
                                                 (0.5, 0.0, "a red car"), (None, 1.0, "")])
def test_pipeline_and_own_loop_make_the_same_edit(unet, strength, eta, prompt, ldm, ldm_img2img):
    """Same seed, scheduler, steps, strength, guidance and eta → the same edit, so the attack (own loop) targets
    what the evaluation (diffusers' StableDiffusionInpaint/Img2ImgPipeline) runs. Two differences were found and
    fixed in the own loop: it used the VAE posterior mean where the pipelines sample it with the generator
    (image and masked-image latents), and it kept a scheduler's steps_offset the pipelines rewrite to 1."""
    model = ldm if unet == "inpaint" else ldm_img2img
    x, mask = blobs(1, seed=4)[0], centre_mask()[0]
    cond = conditioning(model.text, prompt, "")
    config = EditConfig(unet, steps=6, guidance=7.5, eta=eta, strength=strength)
    own, pipe = both_backends(model, x, cond, config, mask)
    assert own.shape == pipe.shape == x.shape
    assert float((own - pipe).abs().max()) <= TOLERANCE
    other = edit_image(model, x, cond, config, seed=12, mask=mask, paste=False, backend="pipeline")
    assert float((other - pipe).abs().max()) > 100 * TOLERANCE  # the seed matters: the check could fail


def test_an_outdated_scheduler_config_is_normalised_as_the_pipeline_does(tiny_dir, tmp_path):
    """A scheduler saved with steps_offset 0 (diffusers' DDIMScheduler() default): the pipeline's constructor
    rewrites it to 1, and so must the own loop, else the timesteps are one off."""
    copy = shutil.copytree(tiny_dir, tmp_path / "old-scheduler")
    path = copy / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "steps_offset": 0}))
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    model = load_ldm(copy)
    with pytest.warns(FutureWarning, match="steps_offset"):  # diffusers' deprecation notice, and its rewrite
        pipe = StableDiffusionInpaintPipeline(vae=model.vae, text_encoder=None, tokenizer=None, unet=model.unet,
                                              scheduler=DDIMScheduler.from_config(json.loads(path.read_text())),
                                              safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    ours = model.new_scheduler()
    assert ours.config.steps_offset == pipe.scheduler.config.steps_offset == 1
    ours.set_timesteps(4)
    pipe.scheduler.set_timesteps(4)
    assert torch.equal(ours.timesteps, pipe.scheduler.timesteps)
    x, mask = blobs(1, seed=5)[0], centre_mask()[0]
    cond, config = conditioning(model.text, "a dog", ""), EditConfig("inpaint", steps=4)
    pipe_edit = edit_image(model, x, cond, config, seed=1, mask=mask, paste=False, backend="pipeline")
    own = edit_image(model, x, cond, config, seed=1, mask=mask, paste=False, backend="own")
    assert float((own - pipe_edit).abs().max()) <= TOLERANCE


def test_pipeline_backend_pastes_back_refuses_no_steps_and_runs_under_the_dtype_autocast(ldm, ldm_img2img,
                                                                                         monkeypatch):
    x, mask = blobs(1, seed=6)[0], centre_mask()[0]
    cond = conditioning(ldm.text, "a red car", "")
    out = edit_image(ldm, x, cond, EditConfig("inpaint", steps=3), seed=0, mask=mask, backend="pipeline")
    kept = mask[0] < 0.5
    assert torch.equal(out[:, kept], x[:, kept])
    with pytest.raises(UsageError, match="no denoising step"):
        edit_image(ldm_img2img, x, cond, EditConfig("img2img", steps=3, strength=0.1), seed=0, backend="pipeline")
    with pytest.raises(UsageError, match="`backend` 'comfy'"):
        edit_image(ldm, x, cond, EditConfig("inpaint", steps=3), seed=0, mask=mask, backend="comfy")
    entered = []
    original = type(ldm_img2img).autocast

    @contextmanager
    def recording(self):
        entered.append(self.dtype)
        with original(self):
            yield

    monkeypatch.setattr(type(ldm_img2img), "autocast", recording)
    edit_image(ldm_img2img, x, cond, EditConfig("img2img", steps=2), seed=0, backend="pipeline")
    assert entered and entered[0] == ldm_img2img.dtype  # --dtype reaches the pipeline as its autocast


def test_missing_diffusers_pipelines_name_the_pip_command(ldm, monkeypatch):
    from confidently.immunize.pipelines import build_pipeline

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers → ImportError
    fresh = type(ldm)(ldm.model_dir, ldm.vae, ldm.unet, ldm.scheduler_config, ldm.text)
    with pytest.raises(MissingBackend, match=r"pip install 'confidently\[diffusion\]'"):
        build_pipeline(fresh, "inpaint")


def save_variant(model_dir, variant: str = "fp16", keep_default: bool = False):
    """Re-save vae/ and unet/ as save_pretrained(variant=...) does (diffusion_pytorch_model.fp16.safetensors)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    for name, cls in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel)):
        module = cls.from_pretrained(str(model_dir), subfolder=name, local_files_only=True)
        config = (model_dir / name / "config.json").read_bytes()  # save_pretrained rewrites it: keep the original
        module.to(torch.float16).save_pretrained(str(model_dir / name), variant=variant)
        (model_dir / name / "config.json").write_bytes(config)
        if not keep_default:
            (model_dir / name / "diffusion_pytorch_model.safetensors").unlink()


def test_an_fp16_variant_loads_upcast_and_edits_like_the_fp32_weights(tiny_dir, tmp_path, ldm):
    copy = shutil.copytree(tiny_dir, tmp_path / "fp16")
    save_variant(copy)
    assert (copy / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    half = load_ldm(copy, variant="fp16")
    assert half.vae.dtype == half.unet.dtype == torch.float32
    weight = next(iter(half.unet.parameters()))
    assert torch.allclose(weight, next(iter(ldm.unet.parameters())).half().float())
    x, mask = blobs(1, seed=7)[0], centre_mask()[0]
    cond, config = conditioning(ldm.text, "a red car", ""), EditConfig("inpaint", steps=3)
    a = edit_image(half, x, cond, config, seed=0, mask=mask, paste=False, backend="pipeline")
    b = edit_image(ldm, x, cond, config, seed=0, mask=mask, paste=False, backend="pipeline")
    assert float((a - b).abs().max()) < 0.05  # fp16 rounding of random weights, not another model
    with pytest.raises(InvalidInput, match="cannot load vae"):
        load_ldm(copy)  # only fp16 files: the default load finds no weights
    with pytest.raises(InvalidInput, match="no --variant fp16 weights"):
        load_ldm(tiny_dir, variant="fp16")
    with pytest.raises(UsageError, match="--variant"):
        load_ldm(tiny_dir, variant="../x")


def test_a_pickled_variant_is_refused_unless_trusted(tiny_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    copy = shutil.copytree(tiny_dir, tmp_path / "fp16-bin")
    save_variant(copy)
    unet = copy / "unet"
    state = load_file(str(unet / "diffusion_pytorch_model.fp16.safetensors"))
    torch.save(state, unet / "diffusion_pytorch_model.fp16.bin")
    (unet / "diffusion_pytorch_model.fp16.safetensors").unlink()
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without --trust-pickle"))
    with pytest.raises(InvalidInput, match=r"diffusion_pytorch_model\.fp16\.bin is a pickle.*--trust-pickle"):
        load_ldm(copy, variant="fp16")
    monkeypatch.setattr(torch, "load", real_load)
    assert load_ldm(copy, variant="fp16", trust_pickle=True).unet is not None


def test_fingerprint_hashes_the_weights_not_only_the_configs(tiny_dir, tmp_path):
    other = write_tiny_model(tmp_path / "seed1", size=32, unet="inpaint", seed=1)  # same configs, other weights
    assert (other / "unet" / "config.json").read_text() == (tiny_dir / "unet" / "config.json").read_text()
    assert model_fingerprint(other) != model_fingerprint(tiny_dir)
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert model_fingerprint(copy) == model_fingerprint(tiny_dir)  # where the files lie does not matter
    save_variant(copy, keep_default=True)
    assert model_fingerprint(copy) == model_fingerprint(tiny_dir)
    assert model_fingerprint(copy, variant="fp16") != model_fingerprint(tiny_dir)
    assert load_ldm(copy, parts=("vae",), variant="fp16").fingerprint() == model_fingerprint(copy, variant="fp16")


@pytest.mark.parametrize("unet", ["inpaint", "img2img"])
def test_bf16_weights_edit_like_the_fp32_weights_in_both_backends(unet, tiny_dir, tiny_img2img_dir, ldm, ldm_img2img):
    """`--dtype bf16`'s weights path forced on the CPU (no autocast there, so the modules really compute in bf16;
    pixels in and edits out stay fp32): each backend's edit is the fp32 weights' edit up to bf16 rounding, well
    below what another seed changes."""
    reference = ldm if unet == "inpaint" else ldm_img2img
    half = load_ldm(tiny_dir if unet == "inpaint" else tiny_img2img_dir, weights_dtype="bf16")
    assert half.unet.dtype == half.vae.dtype == torch.bfloat16 and half.dtype == torch.float32
    x, mask = blobs(1, seed=8)[0], centre_mask()[0]
    cond, config = conditioning(reference.text, "a red car", ""), EditConfig(unet, steps=4)
    for backend in ("own", "pipeline"):
        a = edit_image(half, x, cond, config, seed=3, mask=mask, paste=False, backend=backend)
        b = edit_image(reference, x, cond, config, seed=3, mask=mask, paste=False, backend=backend)
        other = edit_image(reference, x, cond, config, seed=4, mask=mask, paste=False, backend=backend)
        assert a.dtype == torch.float32
        rounding, seed = float((a - b).abs().mean()), float((other - b).abs().mean())
        assert rounding < 0.01 and float((a - b).abs().max()) < 0.1 and seed > 10 * rounding, backend
