"""Local diffusers latent-diffusion directories (SD v1.5 / 2.x layout) and the tiny random model for tests.

Everything loads with ``local_files_only=True``: no network, ever. Components are loaded one by one
(``AutoencoderKL``, ``UNet2DConditionModel``, the scheduler config → ``DDIMScheduler``), because the
diffusers pipelines are ``@torch.no_grad()`` and need ``transformers`` even for tiny models.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.text import (
    TOY_TEXT_DIR,
    ClipText,
    HashTextEncoder,
    TextEncoder,
    load_text_encoder,
    model_index,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COMPONENTS = {
    "vae": ("vae/config.json", "the VAE (AutoencoderKL); every subcommand needs it"),
    "unet": ("unet/config.json", "the denoising UNet (UNet2DConditionModel); `diffusion` and `edit` need it"),
    "scheduler": ("scheduler/scheduler_config.json", "the noise schedule; `diffusion` and `edit` need it"),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = ("inpaint", "img2img")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
PICKLED_SUFFIXES = tuple(pattern[1:] for pattern in PICKLED_WEIGHTS)
TEXT_ENCODER_DIR = "text_encoder"


def dtype_named(name: str | torch.dtype) -> torch.dtype:
    """``fp32|fp16|bf16`` (or a torch dtype among them) → the torch dtype."""
    dtype = name if isinstance(name, torch.dtype) and name in DTYPES.values() else DTYPES.get(name)
    if dtype is None:
        raise UsageError(f"--dtype {name!r}: choose {', '.join(DTYPES)}")
    return dtype


def parse_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``fp32|fp16|bf16`` → the compute dtype; CPU always computes in fp32."""
    dtype = dtype_named(name)
    return dtype if device.type == "cuda" else torch.float32


@dataclass
class LatentDiffusion:
    """The components of one local LDM directory, frozen (``requires_grad_(False)``), in eval mode.

    ``dtype`` is the compute dtype used under autocast on CUDA (fp16/bf16); there :func:`load_ldm` also holds
    the weights in it, as diffusers' ``torch_dtype`` does (half the memory). Pixels go in and latents and
    images come out in fp32 (cast at the model boundary), so losses and gradients with respect to pixels are
    accumulated in fp32.
    """

    model_dir: Path
    vae: Any
    unet: Any | None = None
    scheduler_config: dict[str, Any] | None = None
    text: TextEncoder | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    variant: str | None = None
    weights: Path | None = None  # a single-file checkpoint, when the weights came from one
    pipelines: dict[str, Any] = field(default_factory=dict, repr=False)  # diffusers pipelines, built once

    @property
    def downsampling(self) -> int:
        """Pixels per latent cell: 2^(number of VAE blocks − 1) (8 for SD, 2 for the tiny model)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the VAE's weights are held in (the UNet's and text encoder's load alike)."""
        return self.vae.dtype

    @property
    def mode(self) -> str:
        """inpaint for a 9-channel UNet (latents + mask + masked-image latents), img2img for 4 channels."""
        if self.unet is None:
            raise UsageError(f"{self.model_dir} was loaded without its UNet")
        channels = int(self.unet.config.in_channels)
        if channels == 9:
            return "inpaint"
        if channels == int(self.vae.config.latent_channels):
            return "img2img"
        raise InvalidInput(f"{self.model_dir}/unet has in_channels={channels}; expected 9 (inpainting) or "
                           f"{self.vae.config.latent_channels} (img2img)")

    @property
    def cross_attention_dim(self) -> int | None:
        return None if self.unet is None else int(self.unet.config.cross_attention_dim)

    def new_scheduler(self):
        """A fresh DDIM scheduler from the checkpoint's config (eta only acts in DDIM; stateless per call).

        The config is normalised as the Stable Diffusion pipelines' constructors normalise it
        (:func:`pipeline_scheduler_config`), so the own loop and ``--backend pipeline`` walk the same timesteps.
        """
        from diffusers import DDIMScheduler

        if self.scheduler_config is None:
            raise InvalidInput(f"{self.model_dir} has no scheduler/ ({COMPONENTS['scheduler'][1]})")
        mode = None if self.unet is None else self.mode
        return DDIMScheduler.from_config(pipeline_scheduler_config(self.scheduler_config, mode))

    def autocast(self):
        """fp16/bf16 autocast on CUDA; a no-op context on CPU."""
        enabled = self.device.type == "cuda" and self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def encode_mean(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean of E(s) for s = 2x − 1 in [−1, 1] (unscaled; ×scaling_factor before the UNet), in fp32."""
        with self.autocast():
            return self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mean.float()

    def encode_sample(self, pixels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A sample of E(s), mean + std·noise (unscaled), as diffusers' ``latent_dist.sample(generator)`` draws it:
        reparameterised, so differentiable in the pixels; formed in fp32 whatever the weights' dtype."""
        with self.autocast():
            posterior = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        mean, std = posterior.mean.float(), posterior.std.float()
        return mean + std * noise.to(mean.device, mean.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """D(z / scaling_factor) in [−1, 1], in fp32 (not clamped: losses want the gradient everywhere)."""
        with self.autocast():
            return self.vae.decode((latents / self.scaling_factor).to(self.vae.dtype)).sample.float()

    def fingerprint(self) -> str:
        return model_fingerprint(self.weights or self.model_dir, variant=self.variant)

    def check_size(self, height: int, width: int) -> None:
        factor = self.downsampling
        if height % factor or width % factor:
            raise InvalidInput(f"image is {height}×{width}, not divisible by the model's downsampling factor "
                               f"{factor}; pass --size N (a multiple of {factor}) to centre-crop and resize",
                               field="image")


def pipeline_scheduler_config(config: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """The scheduler config as ``StableDiffusion{Inpaint,Img2Img}Pipeline.__init__`` rewrites it (diffusers 0.42):
    ``steps_offset`` → 1 in both, ``clip_sample`` → False for img2img, ``skip_prk_steps`` → True for inpaint.

    Without this the own loop would denoise at timesteps one off from the pipeline's for an old config
    (e.g. a ``DDIMScheduler()`` saved with the default ``steps_offset=0``).
    """
    config = dict(config)
    if config.get("steps_offset", 1) != 1:
        config["steps_offset"] = 1
    if mode == "img2img" and config.get("clip_sample", False) is True:
        config["clip_sample"] = False
    if mode == "inpaint" and config.get("skip_prk_steps", True) is False:
        config["skip_prk_steps"] = True
    return config


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (names, dtypes, shapes and byte offsets of every tensor, and
    the metadata): what identifies the weights without reading gigabytes."""
    with path.open("rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) < 8:
            raise InvalidInput(f"{path} is not a safetensors file (shorter than its header)")
        size = int.from_bytes(size_bytes, "little")
        if size > 100_000_000:
            raise InvalidInput(f"{path} is not a safetensors file (header of {size} bytes)")
        return handle.read(size)


def weight_files(component_dir: Path, variant: str | None = None) -> list[Path]:
    """The safetensors weight files of one component directory that a load with ``variant`` reads."""
    files = sorted(component_dir.glob("*.safetensors"))
    if variant:
        return [f for f in files if f.name.endswith(f".{variant}.safetensors") or f".{variant}-" in f.name]
    return [f for f in files if not any(f.name.endswith(f".{v}.safetensors") for v in ("fp16", "bf16", "fp32"))]


def model_fingerprint(model_dir: str | Path, variant: str | None = None) -> str:
    """sha256 of the VAE and UNet config JSON and of their weights' safetensors headers (and a sample of the
    bytes after each header): which model a perturbation was computed against.

    Two directories with the same configs and different weights differ: the header holds every tensor's dtype,
    shape and offsets, and the first and last 64 kB of the data are hashed too (the whole file would mean
    reading gigabytes). A single-file checkpoint (``model_dir`` a file) hashes that file's header and samples.
    """
    digest = hashlib.sha256()
    model_dir = Path(model_dir)
    if model_dir.is_file():
        files = [model_dir]
    else:
        files = []
        for part in ("vae", "unet"):
            path = model_dir / part / "config.json"
            if path.is_file():
                digest.update(f"{part}/config.json".encode())
                digest.update(path.read_bytes())
            files += weight_files(model_dir / part, variant)
    for path in files:
        header = safetensors_header(path)
        digest.update(path.name.encode())
        digest.update(header)
        with path.open("rb") as handle:
            handle.seek(8 + len(header))
            digest.update(handle.read(65536))
            handle.seek(max(8 + len(header), path.stat().st_size - 65536))
            digest.update(handle.read(65536))
    return digest.hexdigest()


def configured_mode(model_dir: str | Path) -> str | None:
    """inpaint/img2img from ``unet/config.json`` without loading weights; None when there is no UNet."""
    path = Path(model_dir) / COMPONENTS["unet"][0]
    if not path.is_file():
        return None
    try:
        channels = int(json.loads(path.read_text()).get("in_channels", 4))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path} is not a readable UNet config ({exc})") from None
    return "inpaint" if channels == 9 else "img2img"


def _require(model_dir: Path, name: str) -> None:
    relative, why = COMPONENTS[name]
    if not (model_dir / relative).is_file():
        raise InvalidInput(f"model directory {model_dir} lacks {relative} ({why}); expected a local diffusers "
                           f"layout: vae/, unet/, scheduler/, and text_encoder/+tokenizer/ or {TOY_TEXT_DIR}/")


def _only_pickled_weights(component_dir: Path, trust_pickle: bool, variant: str | None = None) -> bool:
    """Whether the component's weights exist only as pickles (.bin), which are refused unless ``trust_pickle``.

    diffusers and transformers fall back to unpickling a ``.bin`` when there is no safetensors file, and a
    pickle can run code when loaded. With ``variant`` (fp16: ``diffusion_pytorch_model.fp16.safetensors``)
    only that variant's files count, and a directory without them is refused by name.
    """
    if variant:
        if weight_files(component_dir, variant) or any(component_dir.glob(f"*.{variant}.safetensors.index.json")):
            return False
        pickles = sorted(path for pattern in PICKLED_WEIGHTS
                         for path in component_dir.glob(pattern.replace("*", f"*.{variant}")))
        if not pickles:
            present = sorted(p.name for p in component_dir.iterdir() if p.is_file()) if component_dir.is_dir() else []
            raise InvalidInput(f"{component_dir} has no --variant {variant} weights (e.g. diffusion_pytorch_model."
                               f"{variant}.safetensors); it has: {', '.join(present) or 'nothing'}")
    else:
        if weight_files(component_dir) or any(component_dir.glob("*.safetensors.index.json")):
            return False
        pickles = sorted(path for pattern in PICKLED_WEIGHTS for path in component_dir.glob(pattern))
    if pickles and not trust_pickle:
        _refuse_pickle(pickles[0])
    return bool(pickles)


def _refuse_pickle(path: Path) -> None:
    raise InvalidInput(f"{path} is a pickle, which can run code when loaded; convert it to safetensors, "
                       "or pass --trust-pickle if you trust where it came from")


@contextmanager
def _diffusers_errors_only():
    """diffusers logs mismatched weights as multi-line warnings; they become one InvalidInput line instead."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _load_component(model_class, model_dir: Path, name: str, trust_pickle: bool, variant: str | None = None,
                    dtype: torch.dtype = torch.float32):
    """One diffusers component, refused unless its weights are exactly the ones its config.json describes.

    Weights load in ``dtype`` whatever the file's (an fp16 variant becomes fp32 weights unless ``dtype`` is fp16),
    through diffusers' ``torch_dtype``, which keeps the modules a model class marks as fp32-only in fp32.
    """
    use_safetensors = not _only_pickled_weights(model_dir / name, trust_pickle, variant)
    try:
        with _diffusers_errors_only():
            module, info = model_class.from_pretrained(str(model_dir), subfolder=name, local_files_only=True,
                                                       low_cpu_mem_usage=False, use_safetensors=use_safetensors,
                                                       output_loading_info=True, variant=variant,
                                                       torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{model_dir}: cannot load {name}/ ({exc})") from None
    except RuntimeError as exc:  # torch's load_state_dict: a weight of the wrong shape
        raise _shape_mismatch(exc, f"{model_dir / name}: its weights do not match its config.json") from None
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    if missing or unexpected:
        raise InvalidInput(f"{model_dir / name}: its weights do not match its config.json (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}); it would run with random weights")
    return module


def _shape_mismatch(exc: RuntimeError, what: str) -> InvalidInput:
    """torch's load_state_dict error (a weight of the wrong shape) as one InvalidInput line; other errors re-raise."""
    if "Error(s) in loading state_dict" not in str(exc):
        raise exc
    lines = str(exc).splitlines()  # "Error(s) in loading state_dict for X:", then one line per weight
    first = lines[1].strip() if len(lines) > 1 else lines[0]
    return InvalidInput(f"{what} ({first})")


def read_single_file(path: Path, config_dir: str | Path | None, trust_pickle: bool, variant: str | None) -> Path:
    """Check a single-file checkpoint argument (``--model-dir FILE``) before anything is read; its config folder.

    diffusers' single-file loaders need the model's configs, which they would otherwise fetch from the Hub:
    here they come from ``config_dir``, a diffusers-layout folder whose configs describe the file's weights.
    """
    if config_dir is None:
        raise UsageError(f"--model-dir {path} is a single-file checkpoint: also pass --config-dir DIR, a local "
                         "diffusers-layout folder with the model's configs (model_index.json, vae/config.json, "
                         "unet/config.json, scheduler/, tokenizer/ + text_encoder/config.json or toy_text/; no "
                         "weights needed), e.g. the config files of the model's diffusers repository; nothing is "
                         "downloaded")
    if variant is not None:
        raise UsageError(f"--variant {variant} picks files in a model directory; {path} is one file")
    suffix = path.suffix.lower()
    if suffix in PICKLED_SUFFIXES:
        if not trust_pickle:
            _refuse_pickle(path)
    elif suffix != ".safetensors":
        raise InvalidInput(f"{path} is not a single-file checkpoint: expected .safetensors (or .ckpt with "
                           "--trust-pickle)")
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise InvalidInput(f"--config-dir does not exist: {config_dir}")
    return config_dir


def _load_single_file_component(model_class, checkpoint: dict, path: Path, config_dir: Path, name: str,
                                dtype: torch.dtype = torch.float32):
    """One component from a single-file checkpoint in the original LDM layout, through diffusers'
    ``from_single_file`` with the config of ``config_dir/name``; refused unless every weight comes from the file.

    ``from_single_file`` loads non-strictly (without accelerate, weights the file lacks stay random), so the
    converted keys are checked against the module's own.
    """
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    what = f"{path}: its {name} weights do not match {config_dir / name}/config.json"
    try:
        with _diffusers_errors_only():
            module = model_class.from_single_file(checkpoint, config=str(config_dir), subfolder=name,
                                                  local_files_only=True, low_cpu_mem_usage=False,
                                                  torch_dtype=dtype)
    except SingleFileComponentError:
        raise InvalidInput(f"{path} holds no {name} weights in the original LDM layout (first_stage_model.* for "
                           "the VAE, model.diffusion_model.* for the UNet)") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"{path}: cannot load {name} with the configs of {config_dir} ({exc})") from None
    except RuntimeError as exc:
        raise _shape_mismatch(exc, what) from None
    convert = SINGLE_FILE_LOADABLE_CLASSES[model_class.__name__]["checkpoint_mapping_fn"]
    missing = sorted(set(module.state_dict()) - set(convert(checkpoint=checkpoint, config=module.config)))
    if missing:
        raise InvalidInput(f"{what} (missing {missing[:3]}); it would run with random weights")
    return module


def _load_single_file_text(checkpoint: dict, path: Path, config_dir: Path, device: torch.device,
                           dtype: torch.dtype = torch.float32):
    """SD's CLIP text encoder from the file (``cond_stage_model.transformer.*``) with the tokenizer and
    text_encoder/config.json of ``config_dir``; None when the file has no CLIP weights (the folder's own encoder
    is used)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        create_diffusers_clip_model_from_ldm,
        is_clip_model,
    )

    if not is_clip_model(checkpoint) or not (config_dir / TEXT_ENCODER_DIR / "config.json").is_file():
        return None
    from transformers import CLIPTextModel

    try:
        with _diffusers_errors_only():
            model = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, subfolder=TEXT_ENCODER_DIR,
                                                         config=str(config_dir), torch_dtype=dtype,
                                                         local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot load its CLIP text encoder with {config_dir}/text_encoder "
                           f"({exc})") from None
    except RuntimeError as exc:
        raise _shape_mismatch(exc, f"{path}: its text encoder weights do not match "
                                   f"{config_dir}/text_encoder/config.json") from None
    found = {key.removeprefix("text_model.") for key in convert_ldm_clip_checkpoint(checkpoint)}
    missing = sorted(key for key in model.state_dict() if key.removeprefix("text_model.") not in found)
    if missing:  # loaded non-strictly: these would stay random
        raise InvalidInput(f"{path}: its text encoder weights do not match {config_dir}/text_encoder/config.json "
                           f"(missing {missing[:3]}); it would run with random weights")
    return ClipText(config_dir, device, model=model)


def load_ldm(model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str = "fp32", *,
             parts: tuple[str, ...] = ("vae", "unet", "scheduler", "text"), trust_pickle: bool = False,
             variant: str | None = None, config_dir: str | Path | None = None,
             weights_dtype: torch.dtype | str | None = None) -> LatentDiffusion:
    """Load the ``parts`` of a local diffusers LDM directory, or of a single-file checkpoint (never from the network).

    ``parts`` ⊆ {vae, unet, scheduler, text}; the encoder attack needs only ``vae``. A missing
    component is an :class:`InvalidInput` naming it; a missing text encoder is not an error here
    (prompt embeddings may come from a file) but ``conditioning`` refuses when neither exists.
    Pickled weights (``.bin``) load only with ``trust_pickle``; weights that do not fit a component's
    config are refused rather than left randomly initialised. ``variant`` (``fp16``) loads the
    ``*.fp16.safetensors`` files ``save_pretrained(variant="fp16")`` or a hub download wrote.

    ``dtype`` is the compute dtype (:func:`parse_dtype`: fp32 off CUDA). The VAE, UNet and text encoder weights
    are held in ``weights_dtype``, by default the compute dtype, so ``fp16`` on CUDA halves their memory as
    diffusers' ``torch_dtype`` does (an fp16 variant stays fp16; on CPU it is upcast to fp32). Passing
    ``weights_dtype`` holds them in another dtype whatever the device: bf16 weights on a CPU compute in bf16.

    ``model_dir`` may be one ``.safetensors`` file in the original LDM (CompVis) key layout, as model sites
    publish SD checkpoints (``.ckpt`` only with ``trust_pickle``); ``config_dir`` then holds the configs,
    scheduler and tokenizer (and the toy text encoder), and the VAE, UNet and SD's CLIP text encoder come from
    the file through diffusers' ``from_single_file`` conversion.
    """
    model_dir = Path(model_dir)
    if variant is not None and (not variant or not variant.replace("_", "").isalnum()):
        raise UsageError(f"--variant {variant!r}: a weights-file variant such as fp16")
    device = torch.device(device)
    compute = parse_dtype(dtype, device)
    held = compute if weights_dtype is None else dtype_named(weights_dtype)
    weights = None
    if model_dir.is_file():
        weights, model_dir = model_dir, read_single_file(model_dir, config_dir, trust_pickle, variant)
    elif config_dir is not None:
        raise UsageError(f"--config-dir goes with a single-file checkpoint (--model-dir FILE.safetensors); "
                         f"{model_dir} is not a file")
    elif not model_dir.is_dir():
        raise InvalidInput(f"model directory does not exist: {model_dir}")
    for name in ("vae", "unet", "scheduler"):
        if name in parts:
            _require(model_dir, name)
    if torch.float16 in (compute, held) and _vae_forces_upcast(model_dir):
        raise UsageError(f"{model_dir}/vae is SDXL's, which overflows in fp16 (force_upcast), so its "
                         "encodes and edits would be NaN: use --dtype bf16 (the same memory) or fp32, or put a VAE "
                         "made for fp16 (e.g. madebyollin/sdxl-vae-fp16-fix) in vae/")
    from diffusers import AutoencoderKL, UNet2DConditionModel  # slow to import: only once the layout is right

    text, text_variant = None, None
    if weights is not None:
        from diffusers.loaders.single_file_utils import load_single_file_checkpoint

        try:
            checkpoint = load_single_file_checkpoint(str(weights), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InvalidInput(f"{weights}: not a readable checkpoint ({exc})") from None
        vae = _load_single_file_component(AutoencoderKL, checkpoint, weights, model_dir, "vae", held)
        unet = (_load_single_file_component(UNet2DConditionModel, checkpoint, weights, model_dir, "unet", held)
                if "unet" in parts else None)
        if "text" in parts:
            text = _load_single_file_text(checkpoint, weights, model_dir, device, held)
        del checkpoint
    else:
        vae = _load_component(AutoencoderKL, model_dir, "vae", trust_pickle, variant, held)
        unet = (_load_component(UNet2DConditionModel, model_dir, "unet", trust_pickle, variant, held)
                if "unet" in parts else None)
    if "text" in parts and text is None and (model_dir / TEXT_ENCODER_DIR).is_dir():
        # refused before transformers unpickles; a text encoder shipped without the variant loads its default files
        has_variant = variant is not None and bool(weight_files(model_dir / TEXT_ENCODER_DIR, variant))
        text_variant = variant if has_variant else None
        _only_pickled_weights(model_dir / TEXT_ENCODER_DIR, trust_pickle, text_variant)
        if (model_dir / "text_encoder_2").is_dir():  # SDXL's second text encoder
            _only_pickled_weights(model_dir / "text_encoder_2", trust_pickle, text_variant)
    scheduler_config = None
    if "scheduler" in parts:
        try:
            scheduler_config = json.loads((model_dir / COMPONENTS["scheduler"][0]).read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{model_dir}/scheduler/scheduler_config.json is not JSON ({exc})") from None
    for module in (vae, unet):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    if "text" in parts and text is None:
        text = load_text_encoder(model_dir, device, variant=text_variant)
    # SDXL's two CLIP models, ClipText's CLIPTextModel, or the hash encoder itself
    for text_module in getattr(text, "models", [getattr(text, "model", text)]):
        if isinstance(text_module, torch.nn.Module):
            text_module.to(held)
    return LatentDiffusion(model_dir, vae, unet, scheduler_config, text, device, compute, variant, weights)


def _read_json(path: Path) -> dict[str, Any]:
    """A config file's contents; {} when absent or broken (the load that needs it reports that)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _vae_forces_upcast(model_dir: Path) -> bool:
    """Whether an SDXL folder's VAE asks for fp32 (``force_upcast``, on unless its config says false, as in
    diffusers): the SDXL pipelines upcast such a VAE around every call, which a VAE shared with the attacks'
    differentiable loop cannot do. SD 1.x/2.x pipelines ignore the flag (their VAEs run in fp16)."""
    sdxl = (_read_json(model_dir / COMPONENTS["unet"][0]).get("addition_embed_type") == "text_time"
            or str(model_index(model_dir).get("_class_name", "")).startswith("StableDiffusionXL"))
    return sdxl and bool(_read_json(model_dir / COMPONENTS["vae"][0]).get("force_upcast", True))


_SD15_VAE = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32}
_SD_UNET = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "norm_num_groups": 32,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}

# Random-weight architectures by name: "tiny" for tests and laptops (either family); "sd15" and "sd2" have Stable
# Diffusion 1.5's and 2.x's published shapes (VAE ×8, 860M/866M-parameter UNet, 77 × 768 / 77 × 1024 text states)
# to measure a real attack's memory and speed on a GPU before any checkpoint is downloaded. ``head_width``: the
# channels of one attention head where the family lists heads per block (SD 2: 64, so 5, 10, 20, 20 heads).
RANDOM_SCALES: dict[str, dict[str, Any]] = {
    "tiny": {"vae": {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 8},
             "unet": {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8,
                      "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                      "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "attention_head_dim": 4},
             "text": {"dim": 16, "max_length": 8}, "families": ("sd15", "sd2"), "head_width": 8},
    "sd15": {"vae": _SD15_VAE, "unet": {**_SD_UNET, "attention_head_dim": 8},
             "text": {"dim": 768, "max_length": 77}, "families": ("sd15",)},
    "sd2": {"vae": _SD15_VAE, "unet": _SD_UNET, "text": {"dim": 1024, "max_length": 77}, "families": ("sd2",),
            "head_width": 64},
}
# What a family changes besides the sizes, from the published configs: SD 2.1 (768) predicts v (its scheduler's
# prediction_type), upcasts attention, projects attention with linear layers and lists heads per block. (SD
# 2-inpainting and 2-base predict epsilon: `prediction="epsilon"`.)
FAMILIES: dict[str, dict[str, Any]] = {
    "sd15": {"prediction": "epsilon", "unet": {}},
    "sd2": {"prediction": "v", "unet": {"upcast_attention": True, "use_linear_projection": True}},
}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}  # option value → the scheduler's prediction_type


def random_family(scale: str, family: str | None = None, prediction: str | None = None) -> tuple[str, str]:
    """The (family, prediction) of a random model: the scale's own family and the family's prediction by default."""
    if scale not in RANDOM_SCALES:
        raise UsageError(f"--scale {scale!r}: choose {' or '.join(RANDOM_SCALES)}")
    families = RANDOM_SCALES[scale]["families"]
    family = families[0] if family is None else family
    if family not in families:
        raise UsageError(f"--family {family!r}: the {scale} scale is {' or '.join(families)}")
    prediction = FAMILIES[family]["prediction"] if prediction is None else prediction
    if prediction not in PREDICTIONS:
        raise UsageError(f"--prediction {prediction!r}: choose {' or '.join(PREDICTIONS)}")
    return family, prediction


def tiny_components(size: int = 32, unet: str = "inpaint", seed: int = 0, scale: str = "tiny",
                    family: str | None = None, prediction: str | None = None):
    """A random VAE, UNet, DDIM scheduler and hash text encoder (spec §3.5; fixed seeds) of a
    :data:`RANDOM_SCALES` architecture: ``tiny`` by default, ``sd15``/``sd2`` for Stable Diffusion's shapes;
    ``family`` (:data:`FAMILIES`) and ``prediction`` (epsilon or v) as :func:`random_family` resolves them."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    if unet not in MODES:
        raise UsageError(f"--unet {unet!r}: choose inpaint or img2img")
    family, prediction = random_family(scale, family, prediction)
    shapes = RANDOM_SCALES[scale]
    unet_shapes = {**shapes["unet"], **FAMILIES[family]["unet"]}
    if family == "sd2":
        unet_shapes["attention_head_dim"] = tuple(c // shapes["head_width"] for c in unet_shapes["block_out_channels"])
    levels = len(shapes["vae"]["block_out_channels"])
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, latent_channels=4, sample_size=size,
                        **shapes["vae"])
    factor = 2 ** (levels - 1)
    torch.manual_seed(seed + 1)
    text_dim = shapes["text"]["dim"]
    denoiser = UNet2DConditionModel(sample_size=size // factor, in_channels=9 if unet == "inpaint" else 4,
                                    out_channels=4, cross_attention_dim=text_dim, **unet_shapes)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1,
                              prediction_type=PREDICTIONS[prediction])  # SD v1.5's and 2.x's scheduler_config.json
    text = HashTextEncoder(dim=text_dim, max_length=shapes["text"]["max_length"], seed=seed + 2)
    return vae.eval(), denoiser.eval(), scheduler, text.eval()


def write_tiny_model(out: str | Path, size: int = 32, unet: str = "inpaint", seed: int = 0,
                     scale: str = "tiny", family: str | None = None, prediction: str | None = None) -> Path:
    """Write a randomly initialised diffusers-layout LDM directory that every subcommand accepts
    (``scale``: a :data:`RANDOM_SCALES` architecture; ``family``, ``prediction``: see :func:`tiny_components`)."""
    import diffusers

    out = Path(out)
    family, prediction = random_family(scale, family, prediction)
    shapes = RANDOM_SCALES[scale]
    multiple = 2 ** (len(shapes["vae"]["block_out_channels"]) + len(shapes["unet"]["block_out_channels"]) - 2)
    if size < 8 or size % multiple:  # the VAE's and the UNet's downsamplings both divide it
        raise UsageError(f"--size {size}: the {scale} model needs a multiple of {multiple}, at least 8")
    vae, denoiser, scheduler, text = tiny_components(size, unet, seed, scale, family, prediction)
    out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(str(out / "vae"))
    denoiser.save_pretrained(str(out / "unet"))
    scheduler.save_pretrained(str(out / "scheduler"))
    text.save(out / TOY_TEXT_DIR)
    pipeline = "StableDiffusionInpaintPipeline" if unet == "inpaint" else "StableDiffusionImg2ImgPipeline"
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
             "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "DDIMScheduler"], TOY_TEXT_DIR: ["confidently", "HashTextEncoder"],
             "_confidently": {"kind": "tiny-random", "scale": scale, "family": family, "prediction": prediction,
                              "size": size, "unet": unet, "seed": seed}}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
