"""Local diffusers latent-diffusion directories (SD v1.5 layout) and the tiny random model for tests.

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
from confidently.immunize.text import TOY_TEXT_DIR, HashTextEncoder, TextEncoder, load_text_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COMPONENTS = {
    "vae": ("vae/config.json", "the VAE (AutoencoderKL); every subcommand needs it"),
    "unet": ("unet/config.json", "the denoising UNet (UNet2DConditionModel); `diffusion` and `edit` need it"),
    "scheduler": ("scheduler/scheduler_config.json", "the noise schedule; `diffusion` and `edit` need it"),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MODES = ("inpaint", "img2img")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
TEXT_ENCODER_DIR = "text_encoder"


def parse_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``fp32|fp16|bf16`` → the compute dtype; CPU always computes in fp32."""
    dtype = name if isinstance(name, torch.dtype) else DTYPES.get(name)
    if dtype is None:
        raise UsageError(f"--dtype {name!r}: choose {', '.join(DTYPES)}")
    return dtype if device.type == "cuda" else torch.float32


@dataclass
class LatentDiffusion:
    """The components of one local LDM directory, frozen (``requires_grad_(False)``), in eval mode.

    Weights stay in fp32; ``dtype`` is the compute dtype used under autocast on CUDA (fp16/bf16),
    so losses and gradients with respect to pixels are accumulated in fp32.
    """

    model_dir: Path
    vae: Any
    unet: Any | None = None
    scheduler_config: dict[str, Any] | None = None
    text: TextEncoder | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    @property
    def downsampling(self) -> int:
        """Pixels per latent cell: 2^(number of VAE blocks − 1) (8 for SD, 2 for the tiny model)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

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
        """A fresh DDIM scheduler from the checkpoint's config (eta only acts in DDIM; stateless per call)."""
        from diffusers import DDIMScheduler

        if self.scheduler_config is None:
            raise InvalidInput(f"{self.model_dir} has no scheduler/ ({COMPONENTS['scheduler'][1]})")
        return DDIMScheduler.from_config(self.scheduler_config)

    def autocast(self):
        """fp16/bf16 autocast on CUDA; a no-op context on CPU."""
        enabled = self.device.type == "cuda" and self.dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=enabled)

    def encode_mean(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mean of E(s) for s = 2x − 1 in [−1, 1] (unscaled; ×scaling_factor before the UNet)."""
        with self.autocast():
            return self.vae.encode(pixels.to(self.device)).latent_dist.mean.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """D(z / scaling_factor) in [−1, 1] (not clamped: losses want the gradient everywhere)."""
        with self.autocast():
            return self.vae.decode(latents / self.scaling_factor).sample.float()

    def fingerprint(self) -> str:
        return model_fingerprint(self.model_dir)

    def check_size(self, height: int, width: int) -> None:
        factor = self.downsampling
        if height % factor or width % factor:
            raise InvalidInput(f"image is {height}×{width}, not divisible by the model's downsampling factor "
                               f"{factor}; pass --size N (a multiple of {factor}) to centre-crop and resize",
                               field="image")


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the VAE and UNet config JSON: which model a perturbation was computed against."""
    digest = hashlib.sha256()
    for part in ("vae/config.json", "unet/config.json"):
        path = Path(model_dir) / part
        if path.is_file():
            digest.update(part.encode())
            digest.update(path.read_bytes())
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


def _only_pickled_weights(component_dir: Path, trust_pickle: bool) -> bool:
    """Whether the component's weights exist only as pickles (.bin), which are refused unless ``trust_pickle``.

    diffusers and transformers fall back to unpickling a ``.bin`` when there is no safetensors file, and a
    pickle can run code when loaded.
    """
    if any(component_dir.glob("*.safetensors")) or any(component_dir.glob("*.safetensors.index.json")):
        return False
    pickles = sorted(path for pattern in PICKLED_WEIGHTS for path in component_dir.glob(pattern))
    if pickles and not trust_pickle:
        raise InvalidInput(f"{pickles[0]} is a pickle, which can run code when loaded; convert it to safetensors, "
                           "or pass --trust-pickle if you trust where it came from")
    return bool(pickles)


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


def _load_component(model_class, model_dir: Path, name: str, trust_pickle: bool):
    """One diffusers component, refused unless its weights are exactly the ones its config.json describes."""
    use_safetensors = not _only_pickled_weights(model_dir / name, trust_pickle)
    try:
        with _diffusers_errors_only():
            module, info = model_class.from_pretrained(str(model_dir), subfolder=name, local_files_only=True,
                                                       low_cpu_mem_usage=False, use_safetensors=use_safetensors,
                                                       output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{model_dir}: cannot load {name}/ ({exc})") from None
    except RuntimeError as exc:  # torch's load_state_dict: a weight of the wrong shape
        if "Error(s) in loading state_dict" not in str(exc):
            raise
        lines = str(exc).splitlines()  # "Error(s) in loading state_dict for X:", then one line per weight
        first = lines[1].strip() if len(lines) > 1 else lines[0]
        raise InvalidInput(f"{model_dir / name}: its weights do not match its config.json ({first})") from None
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    if missing or unexpected:
        raise InvalidInput(f"{model_dir / name}: its weights do not match its config.json (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}); it would run with random weights")
    return module


def load_ldm(model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | str = "fp32", *,
             parts: tuple[str, ...] = ("vae", "unet", "scheduler", "text"), trust_pickle: bool = False
             ) -> LatentDiffusion:
    """Load the ``parts`` of a local diffusers LDM directory (never from the network).

    ``parts`` ⊆ {vae, unet, scheduler, text}; the encoder attack needs only ``vae``. A missing
    component is an :class:`InvalidInput` naming it; a missing text encoder is not an error here
    (prompt embeddings may come from a file) but ``conditioning`` refuses when neither exists.
    Pickled weights (``.bin``) load only with ``trust_pickle``; weights that do not fit a component's
    config are refused rather than left randomly initialised.
    """
    model_dir = Path(model_dir)
    device = torch.device(device)
    if not model_dir.is_dir():
        raise InvalidInput(f"model directory does not exist: {model_dir}")
    for name in ("vae", "unet", "scheduler"):
        if name in parts:
            _require(model_dir, name)
    from diffusers import AutoencoderKL, UNet2DConditionModel  # slow to import: only once the layout is right

    vae = _load_component(AutoencoderKL, model_dir, "vae", trust_pickle)
    unet = _load_component(UNet2DConditionModel, model_dir, "unet", trust_pickle) if "unet" in parts else None
    if "text" in parts and (model_dir / TEXT_ENCODER_DIR).is_dir():
        _only_pickled_weights(model_dir / TEXT_ENCODER_DIR, trust_pickle)  # refused before transformers unpickles
    scheduler_config = None
    if "scheduler" in parts:
        try:
            scheduler_config = json.loads((model_dir / COMPONENTS["scheduler"][0]).read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{model_dir}/scheduler/scheduler_config.json is not JSON ({exc})") from None
    for module in (vae, unet):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    text = load_text_encoder(model_dir, device) if "text" in parts else None
    return LatentDiffusion(model_dir, vae, unet, scheduler_config, text, device, parse_dtype(dtype, device))


def tiny_components(size: int = 32, unet: str = "inpaint", seed: int = 0):
    """The tiny random VAE, UNet, DDIM scheduler and hash text encoder of spec §3.5 (fixed seeds)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    if unet not in MODES:
        raise UsageError(f"--unet {unet!r}: choose inpaint or img2img")
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=size)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(seed + 1)
    denoiser = UNet2DConditionModel(sample_size=size // factor, in_channels=9 if unet == "inpaint" else 4,
                                    out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
                                    norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                    attention_head_dim=4)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False)
    text = HashTextEncoder(dim=16, max_length=8, seed=seed + 2)
    return vae.eval(), denoiser.eval(), scheduler, text.eval()


def write_tiny_model(out: str | Path, size: int = 32, unet: str = "inpaint", seed: int = 0) -> Path:
    """Write a randomly initialised diffusers-layout LDM directory that every subcommand accepts."""
    import diffusers

    out = Path(out)
    if size < 8 or size % 2:
        raise UsageError(f"--size {size}: the tiny model needs an even size >= 8")
    vae, denoiser, scheduler, text = tiny_components(size, unet, seed)
    out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(str(out / "vae"))
    denoiser.save_pretrained(str(out / "unet"))
    scheduler.save_pretrained(str(out / "scheduler"))
    text.save(out / TOY_TEXT_DIR)
    pipeline = "StableDiffusionInpaintPipeline" if unet == "inpaint" else "StableDiffusionImg2ImgPipeline"
    index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__,
             "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "DDIMScheduler"], TOY_TEXT_DIR: ["confidently", "HashTextEncoder"],
             "_confidently": {"kind": "tiny-random", "size": size, "unet": unet, "seed": seed}}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
