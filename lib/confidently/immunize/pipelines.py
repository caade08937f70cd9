"""The evaluation edit through diffusers' own pipelines (``immunize edit --backend pipeline``, the default).

PhotoGuard's claim is about the editing software people run, so the evaluation edits with
``StableDiffusionInpaintPipeline`` (9-channel UNets) or ``StableDiffusionImg2ImgPipeline`` (4-channel),
built once per model from the components :func:`~confidently.immunize.models.load_ldm` already loaded:
the same VAE and UNet objects, a DDIM scheduler from the same config as the own loop's, no safety
checker, and no text encoder or tokenizer: the prompt's embeddings come from the project's text
encoder (CLIP or the tiny hash encoder) as ``prompt_embeds`` / ``negative_prompt_embeds``. An SDXL directory
(:mod:`.sdxl`) gets ``StableDiffusionXLInpaintPipeline`` / ``StableDiffusionXLImg2ImgPipeline`` instead, also fed
``pooled_prompt_embeds`` / ``negative_pooled_prompt_embeds``, with its ``model_index.json`` flags and no watermark.

The pipeline gets the CPU ``torch.Generator`` the own loop gets, so it draws the same posterior,
initial and DDIM noise; the two backends agree to float rounding (tests/immunize/test_pipelines.py).
``--dtype fp16|bf16`` reaches the pipeline as the weights' dtype (on CUDA) and the autocast the own loop
computes under. diffusers and transformers are the optional ``diffusion`` extra and load only here.
"""

from __future__ import annotations

import torch

from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.immunize.edit_backends import register_edit_backend
from confidently.immunize.editing import EditConfig, binarize_mask
from confidently.immunize.models import LatentDiffusion, _diffusers_errors_only
from confidently.immunize.sdxl import PIPELINES as SDXL_PIPELINES
from confidently.immunize.sdxl import is_sdxl, pipeline_components, pipeline_inputs
from confidently.immunize.text import Conditioning

PIPELINES = {"inpaint": "StableDiffusionInpaintPipeline", "img2img": "StableDiffusionImg2ImgPipeline"}
INSTALL = "pip install 'confidently[diffusion]' (diffusers and transformers)"


def pipeline_name(ldm: LatentDiffusion, mode: str) -> str:
    return (SDXL_PIPELINES if is_sdxl(ldm) else PIPELINES)[mode]


def pipeline_class(name: str):
    """The diffusers pipeline class ``name``; :class:`MissingBackend` with the pip command when it is absent.

    diffusers exports the Stable Diffusion pipelines as placeholders that raise ImportError on use when
    transformers is missing, so both imports are checked here.
    """
    try:
        import diffusers
        import transformers  # noqa: F401 - the SD pipelines need it even without a text encoder
    except ImportError as exc:
        raise MissingBackend(f"--backend pipeline needs diffusers' Stable Diffusion pipelines ({exc.name} is "
                             f"missing): {INSTALL}; or use --backend own") from None
    return getattr(diffusers, name)


def build_pipeline(ldm: LatentDiffusion, mode: str):
    """The pipeline for ``mode`` over ``ldm``'s own modules (no copy), cached on ``ldm``."""
    if ldm.unet is None:
        raise UsageError(f"{ldm.model_dir}: editing needs the UNet (load it with parts including 'unet')")
    if mode not in ldm.pipelines:
        name = pipeline_name(ldm, mode)
        cls = pipeline_class(name)
        components = (pipeline_components(ldm) if is_sdxl(ldm) else
                      {"text_encoder": None, "tokenizer": None, "safety_checker": None, "feature_extractor": None,
                       "requires_safety_checker": False})
        try:
            pipe = cls(vae=ldm.vae, unet=ldm.unet, scheduler=ldm.new_scheduler(), **components)
        except ImportError as exc:
            raise MissingBackend(f"{name} cannot be built here ({exc}): {INSTALL}") from None
        pipe.set_progress_bar_config(disable=True)
        ldm.pipelines[mode] = pipe
    return ldm.pipelines[mode]


@register_edit_backend("pipeline")
@torch.no_grad()
def pipeline_edit(ldm: LatentDiffusion, pixels: torch.Tensor, cond: Conditioning, config: EditConfig,
                  generator: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Edit ``pixels`` (B×3×H×W in [0, 1]) with the diffusers pipeline; B×3×H×W in [0, 1] (``output_type="pt"``).

    Steps, strength, guidance and eta are ``config``'s; a fresh scheduler per call, as in the own loop.
    """
    if config.denoised_steps < 1:
        raise UsageError(f"--strength {config.effective_strength} × --steps {config.steps} leaves no denoising step; "
                         "the diffusers pipelines refuse that (raise --steps or --strength, or use --backend own)")
    batch, _, height, width = pixels.shape
    ldm.check_size(height, width)
    pipe = build_pipeline(ldm, config.mode)
    pipe.scheduler = ldm.new_scheduler()
    embeds = cond.cond.to(ldm.device).repeat(batch, 1, 1)
    negative = cond.uncond.to(ldm.device).repeat(batch, 1, 1)
    kwargs = {"prompt_embeds": embeds, "negative_prompt_embeds": negative, "image": pixels.to(ldm.device),
              "num_inference_steps": config.steps, "strength": config.effective_strength,
              "guidance_scale": config.guidance, "eta": config.eta, "generator": generator, "output_type": "pt"}
    if is_sdxl(ldm):
        kwargs.update(pipeline_inputs(ldm, cond, batch))
    if config.mode == "inpaint":
        if mask is None:
            raise InvalidInput("inpainting needs a mask (1 = regenerate, 0 = keep); give the record a \"mask\"",
                               field="mask")
        kwargs.update(mask_image=binarize_mask(mask).to(ldm.device), height=height, width=width)
    try:
        with ldm.autocast(), _diffusers_errors_only():  # e.g. the SDXL VAE's force_upcast cast warns every call
            images = pipe(**kwargs).images
    except ValueError as exc:  # the pipelines' check_inputs: e.g. sizes not divisible by 8
        raise InvalidInput(f"{pipeline_name(ldm, config.mode)} refused the edit ({exc}); --backend own has no such "
                           "limit", field="image") from None
    return images.float()
