"""Stable Diffusion XL directories: the UNet's extra conditioning, the SDXL pipelines, and a tiny random SDXL.

An SDXL UNet (``addition_embed_type: "text_time"`` in ``unet/config.json``) takes, besides the prompt embeddings
(both CLIPs' penultimate states, :class:`~confidently.immunize.text.DualClipText`), ``added_cond_kwargs``: the
pooled embedding of ``text_encoder_2`` and six "micro-conditioning" time ids (original size, crop corner, target
size), or five (original size, crop corner, aesthetic score) when ``model_index.json`` says
``requires_aesthetics_score``. Both are built here as ``StableDiffusionXL{Img2Img,Inpaint}Pipeline`` builds them
(sizes = the edited image's, crop (0, 0), aesthetic scores 6.0 / 2.5), so the own loop (:mod:`.editing`) and
``--backend pipeline`` (:mod:`.pipelines`, fed the same tensors as ``pooled_prompt_embeds``) make the same edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.models import MODES, RANDOM_SCALES, LatentDiffusion
from confidently.immunize.text import Conditioning, model_index

PIPELINES = {"inpaint": "StableDiffusionXLInpaintPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline"}
AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE = 6.0, 2.5  # the SDXL pipelines' defaults
TINY_TEXT = {"hidden": 16, "projection": 16, "max_length": 16}  # each tiny CLIP; the UNet sees both: 32 wide
TINY_TIME_DIM = 8


@dataclass(frozen=True)
class SdxlFlags:
    """The SDXL pipelines' config flags from ``model_index.json`` (defaults: the pipelines' own)."""

    requires_aesthetics_score: bool = False
    force_zeros_for_empty_prompt: bool = True

    @classmethod
    def read(cls, model_dir: str | Path) -> SdxlFlags:
        index = model_index(model_dir)
        return cls(bool(index.get("requires_aesthetics_score", False)),
                   bool(index.get("force_zeros_for_empty_prompt", True)))


def is_sdxl(ldm: LatentDiffusion) -> bool:
    """An SDXL UNet: it needs the pooled text embedding and the time ids (``addition_embed_type: text_time``)."""
    return ldm.unet is not None and getattr(ldm.unet.config, "addition_embed_type", None) == "text_time"


def time_ids(ldm: LatentDiffusion, height: int, width: int, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative, positive) 1×N time ids for an edit at height×width, as the pipelines' ``_get_add_time_ids``, and
    checked against the UNet's ``add_embedding`` width as they check it."""
    if SdxlFlags.read(ldm.model_dir).requires_aesthetics_score:
        positive = [height, width, 0, 0, AESTHETIC_SCORE]
        negative = [height, width, 0, 0, NEGATIVE_AESTHETIC_SCORE]
    else:
        positive = negative = [height, width, 0, 0, height, width]
    expected = int(ldm.unet.add_embedding.linear_1.in_features)
    passed = int(ldm.unet.config.addition_time_embed_dim) * len(positive) + pooled_dim
    if expected != passed:
        raise InvalidInput(f"{ldm.model_dir}/unet expects an added embedding {expected} wide, but {len(positive)} time "
                           f"ids and a {pooled_dim}-wide pooled text embedding make {passed}: check "
                           "requires_aesthetics_score in model_index.json (5 time ids with it, 6 without) and the "
                           "pooled embedding's width (text_encoder_2's projection_dim)")
    return torch.tensor([negative], dtype=torch.float32), torch.tensor([positive], dtype=torch.float32)


def _pooled(ldm: LatentDiffusion, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
    if cond.pooled is None or cond.uncond_pooled is None:
        raise InvalidInput(f"{ldm.model_dir} is an SDXL model: its UNet needs the pooled text embeddings too (SDXL's "
                           "text_encoder_2/ + tokenizer_2/ in the directory, or pooled_prompt_embeds and "
                           "negative_pooled_prompt_embeds [1, P] next to the prompt embeddings)",
                           field="prompt_embeds")
    return cond.uncond_pooled, cond.pooled


def guidance_changes_nothing(ldm: LatentDiffusion, cond: Conditioning) -> bool:
    """Whether both classifier-free-guidance branches see the same input (then ε_u + g·(ε_c − ε_u) = ε_c and one
    UNet pass does): equal prompt embeddings and, for SDXL, equal pooled embeddings and time ids."""
    if not torch.equal(cond.cond, cond.uncond):
        return False
    if not is_sdxl(ldm):
        return True
    negative, positive = _pooled(ldm, cond)
    return torch.equal(negative, positive) and not SdxlFlags.read(ldm.model_dir).requires_aesthetics_score


def unet_kwargs(ldm: LatentDiffusion, cond: Conditioning, batch: int, height: int, width: int,
                guided: bool) -> dict[str, Any]:
    """The extra keyword arguments of the own loop's UNet call: {} but for SDXL, whose ``added_cond_kwargs`` are
    batched like the prompt embeddings ([uncond × batch, cond × batch] when ``guided``)."""
    if not is_sdxl(ldm):
        return {}
    negative, positive = _pooled(ldm, cond)
    negative_ids, positive_ids = time_ids(ldm, height, width, int(positive.shape[-1]))
    if guided:
        text_embeds = torch.cat([negative.repeat(batch, 1), positive.repeat(batch, 1)])
        ids = torch.cat([negative_ids.repeat(batch, 1), positive_ids.repeat(batch, 1)])
    else:
        text_embeds, ids = positive.repeat(batch, 1), positive_ids.repeat(batch, 1)
    dtype = ldm.unet.dtype  # the weights' dtype in, as the prompt embeddings
    return {"added_cond_kwargs": {"text_embeds": text_embeds.to(ldm.device, dtype),
                                  "time_ids": ids.to(ldm.device, dtype)}}


def pipeline_components(ldm: LatentDiffusion) -> dict[str, Any]:
    """What an SDXL pipeline's constructor takes besides vae/unet/scheduler: no text encoders (the embeddings are
    passed in), the directory's flags, and no invisible watermark (it would change the pixels compared)."""
    flags = SdxlFlags.read(ldm.model_dir)
    return {"text_encoder": None, "text_encoder_2": None, "tokenizer": None, "tokenizer_2": None,
            "requires_aesthetics_score": flags.requires_aesthetics_score,
            "force_zeros_for_empty_prompt": flags.force_zeros_for_empty_prompt, "add_watermarker": False}


def pipeline_inputs(ldm: LatentDiffusion, cond: Conditioning, batch: int) -> dict[str, torch.Tensor]:
    """The pooled embeddings as the SDXL pipelines' ``__call__`` takes them, one row per image."""
    negative, positive = _pooled(ldm, cond)
    time_ids(ldm, 8, 8, int(positive.shape[-1]))  # the width check, before the pipeline's less specific one
    dtype = ldm.unet.dtype
    return {"pooled_prompt_embeds": positive.to(ldm.device, dtype).repeat(batch, 1),
            "negative_pooled_prompt_embeds": negative.to(ldm.device, dtype).repeat(batch, 1)}


def check_tiny_sdxl(size: int, unet: str, scale: str = "tiny", prediction: str | None = None) -> None:
    """``tiny-model --family sdxl``'s usage errors, before anything is written: tiny, epsilon-prediction only."""
    if unet not in MODES:
        raise UsageError(f"--unet {unet!r}: choose inpaint or img2img")
    if scale != "tiny":
        raise UsageError(f"--scale {scale} --family sdxl: the SDXL family is written at the tiny scale only")
    if prediction not in (None, "epsilon"):
        raise UsageError(f"--prediction {prediction} --family sdxl: SDXL predicts epsilon")
    shapes = RANDOM_SCALES["tiny"]
    multiple = 2 ** (len(shapes["vae"]["block_out_channels"]) + len(shapes["unet"]["block_out_channels"]) - 2)
    if size < 8 or size % multiple:
        raise UsageError(f"--size {size}: the tiny SDXL model needs a multiple of {multiple}, at least 8")


def write_tiny_sdxl(out: str | Path, size: int = 32, unet: str = "img2img", seed: int = 0,
                    aesthetics: bool = False) -> Path:
    """A random SDXL-shaped directory (stabilityai/stable-diffusion-xl-base-1.0's layout for img2img,
    diffusers/stable-diffusion-xl-1.0-inpainting-0.1's for inpaint): tiny VAE (scaling factor 0.13025,
    force_upcast), a ``text_time`` UNet, SDXL's Euler scheduler config, and two tiny CLIP text encoders with a
    minimal BPE tokenizer each, so ``StableDiffusionXL*Pipeline.from_pretrained`` loads it too.
    ``aesthetics``: the refiner's 5 time ids (``requires_aesthetics_score``) instead of 6."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    from confidently.immunize.clip import write_tiny_tokenizer

    check_tiny_sdxl(size, unet)
    shapes = RANDOM_SCALES["tiny"]
    levels = len(shapes["vae"]["block_out_channels"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=4, sample_size=size,
                        scaling_factor=0.13025, force_upcast=True, **shapes["vae"])
    vae.save_pretrained(str(out / "vae"))
    time_count = 5 if aesthetics else 6
    torch.manual_seed(seed + 1)
    denoiser = UNet2DConditionModel(sample_size=size // 2 ** (levels - 1), in_channels=9 if unet == "inpaint" else 4,
                                    out_channels=4, cross_attention_dim=2 * TINY_TEXT["hidden"],
                                    addition_embed_type="text_time", addition_time_embed_dim=TINY_TIME_DIM,
                                    projection_class_embeddings_input_dim=TINY_TIME_DIM * time_count
                                    + TINY_TEXT["projection"], **shapes["unet"])
    denoiser.save_pretrained(str(out / "unet"))
    EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                           timestep_spacing="leading").save_pretrained(str(out / "scheduler"))  # SDXL base's
    for suffix, model_class, pad in (("", "CLIPTextModel", "<|endoftext|>"),
                                     ("_2", "CLIPTextModelWithProjection", "!")):  # SDXL's tokenizer_2 pads with "!"
        tokenizer = write_tiny_tokenizer(out / f"tokenizer{suffix}", pad_token=pad,
                                         model_max_length=TINY_TEXT["max_length"])
        config = transformers.CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TINY_TEXT["hidden"],
                                             intermediate_size=2 * TINY_TEXT["hidden"], num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=TINY_TEXT["max_length"],
                                             projection_dim=TINY_TEXT["projection"],
                                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                             pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed + 2 + len(suffix))
        getattr(transformers, model_class)(config).save_pretrained(str(out / f"text_encoder{suffix}"),
                                                                   safe_serialization=True)
    index = {"_class_name": PIPELINES[unet], "_diffusers_version": diffusers.__version__,
             "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": aesthetics,
             "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
             "image_encoder": [None, None], "feature_extractor": [None, None],
             "_confidently": {"kind": "tiny-random", "family": "sdxl", "size": size, "unet": unet, "seed": seed}}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
