"""One differentiable LDM editing loop (spec §2.3, §2.6), shared by `edit` and the diffusion attack.

The diffusers pipelines' ``__call__`` run under ``torch.no_grad()``, so the loop is rebuilt from the
components, as the reference code's ``attack_forward`` does:

* inpaint (9-channel UNet): UNet input = [latents, mask, masked-image latents]; strength 1.0 starts
  from pure noise, strength < 1 noises the image latents to the first kept timestep (as diffusers).
* img2img (4-channel UNet, SDEdit): encode, noise to the timestep given by strength, denoise.
* classifier-free guidance ε̂ = ε_u + g·(ε_c − ε_u); DDIM with ``eta``; a fresh scheduler per call
  (stateful schedulers break repeated unrolls).
* the UNet predicts ε, or v (SD 2.1 at 768: the scheduler config's ``prediction_type: v_prediction``):
  guidance mixes the raw outputs, as the pipelines do, and ``DDIMScheduler.step`` converts v with the
  scheduler's own alphas, x̂₀ = √ᾱ_t·x_t − √(1−ᾱ_t)·v and ε̂ = √ᾱ_t·v + √(1−ᾱ_t)·x_t, in fp32: the
  arithmetic of ``--backend pipeline`` (tests/immunize/test_sd2.py).
* the UNet and VAE get their inputs in their weights' dtype (fp16/bf16 weights on CUDA) and return fp32:
  latents, the DDIM step, the decoded image and every loss on it stay fp32.
* every random number (VAE posterior samples, initial latents, DDIM variance noise) is drawn up
  front from a CPU ``torch.Generator``, in the order diffusers' pipelines draw them from theirs, and
  moved to the device: CPU and GPU runs see the same noise, checkpointed recomputation sees the
  same noise as the first pass, and with the same seed the own loop and ``--backend pipeline``
  (:mod:`.pipelines`) make the same edit (tests/immunize/test_pipelines.py).
* with ``checkpointing`` each denoising step runs under ``torch.utils.checkpoint``
  (``use_reentrant=False``) and the VAE and UNet checkpoint their blocks (diffusers' own switch):
  memory O(K · latent) + one block's activations instead of K UNet activation sets, for ~1.5× time
  (bench/immunize_speed.py: peak 0.19× at K = 4 on the tiny model).

The image and masked-image latents are VAE posterior *samples* (mean + std·ε, reparameterised, so
still differentiable), as the pipelines' ``retrieve_latents(..., generator)`` draws them; the
attack targets the edit the attacker's software makes. The scheduler config is normalised as the
pipelines' constructors normalise it (``steps_offset`` 1, see ``models.pipeline_scheduler_config``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.edit_backends import EDIT_BACKENDS, register_edit_backend
from confidently.immunize.models import MODES, LatentDiffusion
from confidently.immunize.sdxl import guidance_changes_nothing, unet_kwargs
from confidently.immunize.text import Conditioning

DEFAULT_STRENGTH = {"inpaint": 1.0, "img2img": 0.5}


def denoised_steps(steps: int, strength: float) -> int:
    """The denoising steps an edit really runs, ⌊steps·strength⌋ (diffusers skips the first ones): what
    records report, not the requested ``steps``."""
    return min(int(steps * strength), steps)


@dataclass(frozen=True)
class EditConfig:
    """How an image is edited. ``strength`` None → 1.0 for inpaint, 0.5 for img2img (spec §2.6)."""

    mode: str = "inpaint"
    steps: int = 100
    guidance: float = 7.5
    eta: float = 1.0
    strength: float | None = None
    checkpointing: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"--mode {self.mode!r}: choose auto, {' or '.join(MODES)}")
        if self.steps < 1:
            raise UsageError(f"--steps {self.steps}: need at least one denoising step")
        if self.strength is not None and not 0 < self.strength <= 1:
            raise UsageError(f"--strength {self.strength}: must lie in (0, 1]")
        if self.eta < 0:
            raise UsageError(f"--eta {self.eta}: must be >= 0")

    @property
    def effective_strength(self) -> float:
        return DEFAULT_STRENGTH[self.mode] if self.strength is None else self.strength

    @property
    def denoised_steps(self) -> int:
        return denoised_steps(self.steps, self.effective_strength)


def binarize_mask(mask: torch.Tensor) -> torch.Tensor:
    """1 = regenerate, 0 = keep (diffusers convention), binarised at 0.5, shaped B×1×H×W."""
    if mask.ndim == 3:
        mask = mask.unsqueeze(0)
    return (mask[:, :1] >= 0.5).float()


def resolve_mode(ldm: LatentDiffusion, mode: str) -> str:
    """``auto`` → from the UNet's in_channels; an explicit mode must match the UNet."""
    actual = ldm.mode
    if mode not in ("auto", actual):
        raise UsageError(f"--mode {mode}: {ldm.model_dir}/unet has in_channels={ldm.unet.config.in_channels}, "
                         f"an {actual} model")
    return actual


@dataclass
class EditNoise:
    """Every random draw of one edit: the VAE posterior noise of the image latents (img2img, or inpaint
    with strength < 1) and of the masked-image latents (inpaint), the initial latent noise, and one DDIM
    variance noise per step."""

    initial: torch.Tensor
    variance: list[torch.Tensor | None]
    image_posterior: torch.Tensor | None = None
    masked_posterior: torch.Tensor | None = None

    @classmethod
    def draw(cls, generator: torch.Generator, shape: tuple[int, ...], steps: int, eta: float,
             device: torch.device, mode: str = "img2img", strength: float = 1.0) -> EditNoise:
        """In diffusers' order: image posterior (``prepare_latents`` encodes the image first when it is
        needed), initial noise, masked-image posterior (``prepare_mask_latents``), then one DDIM variance
        noise per step (``scheduler.step(..., generator)``)."""
        image = torch.randn(shape, generator=generator).to(device) if mode == "img2img" or strength < 1 else None
        initial = torch.randn(shape, generator=generator).to(device)
        masked = torch.randn(shape, generator=generator).to(device) if mode == "inpaint" else None
        variance = [torch.randn(shape, generator=generator).to(device) if eta > 0 else None for _ in range(steps)]
        return cls(initial, variance, image, masked)

    @classmethod
    def concat(cls, parts: list[EditNoise]) -> EditNoise:
        """The draws of several photos (each from its own generator) as one batch's, in order."""
        if len(parts) == 1:
            return parts[0]

        def cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if tensors[0] is None else torch.cat(tensors)

        return cls(torch.cat([p.initial for p in parts]),
                   [cat([p.variance[i] for p in parts]) for i in range(len(parts[0].variance))],
                   cat([p.image_posterior for p in parts]), cat([p.masked_posterior for p in parts]))


def edit_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The timesteps left after skipping the first steps − ⌊steps·strength⌋ (diffusers ``get_timesteps``)."""
    scheduler.set_timesteps(steps)
    return scheduler.timesteps[max(steps - denoised_steps(steps, strength), 0):]


def set_block_checkpointing(ldm: LatentDiffusion, enabled: bool) -> None:
    """diffusers' own per-block gradient checkpointing in the VAE and the UNet, so the recomputed step,
    the encoder and the decoder each hold one block's activations at a time.

    The flags act only while grad is enabled (no-grad edits ignore them) and are left set: the
    per-step checkpoints recompute during backward, after the forward returned, and must take the
    same path then.
    """
    for module in (ldm.vae, ldm.unet):
        if module is None or not getattr(module, "_supports_gradient_checkpointing", False):
            continue
        if enabled and not module.is_gradient_checkpointing:
            module.enable_gradient_checkpointing()
        elif not enabled and module.is_gradient_checkpointing:
            module.disable_gradient_checkpointing()


def edit_forward(ldm: LatentDiffusion, pixels: torch.Tensor, cond: Conditioning, config: EditConfig,
                 generator: torch.Generator, mask: torch.Tensor | None = None,
                 noise: EditNoise | None = None) -> torch.Tensor:
    """Edit ``pixels`` (B×3×H×W in [0, 1]); returns the decoded result in [−1, 1], not clamped.

    Differentiable with respect to ``pixels`` when grad is enabled (the diffusion attack); under
    ``torch.no_grad()`` it is the evaluation edit. ``mask`` (1 = regenerate) is required for inpaint.
    With ``config.checkpointing`` and grad enabled, each denoising step is checkpointed and the VAE
    and UNet checkpoint their blocks too.
    """
    if torch.is_grad_enabled():
        set_block_checkpointing(ldm, config.checkpointing)
    return _edit_forward(ldm, pixels, cond, config, generator, mask, noise)


def _edit_forward(ldm: LatentDiffusion, pixels: torch.Tensor, cond: Conditioning, config: EditConfig,
                  generator: torch.Generator | None, mask: torch.Tensor | None,
                  noise: EditNoise | None) -> torch.Tensor:
    if ldm.unet is None:
        raise UsageError(f"{ldm.model_dir}: editing needs the UNet (load it with parts including 'unet')")
    batch, _, height, width = pixels.shape
    ldm.check_size(height, width)
    factor, channels = ldm.downsampling, int(ldm.vae.config.latent_channels)
    latent_shape = (batch, channels, height // factor, width // factor)
    device, sf = ldm.device, ldm.scaling_factor
    scheduler = ldm.new_scheduler()
    timesteps = edit_timesteps(scheduler, config.steps, config.effective_strength)
    noise = noise or EditNoise.draw(generator, latent_shape, len(timesteps), config.eta, device, config.mode,
                                    config.effective_strength)
    s = pixels.to(device) * 2 - 1

    extra = None
    if config.mode == "inpaint":
        if mask is None:
            raise InvalidInput("inpainting needs a mask (1 = regenerate, 0 = keep); give the record a \"mask\"",
                               field="mask")
        mask = binarize_mask(mask).to(device)
        masked = s * (mask < 0.5)
        masked_latents = _encode(ldm, masked, noise.masked_posterior) * sf
        mask_latents = F.interpolate(mask, size=latent_shape[-2:])
        extra = torch.cat([mask_latents, masked_latents], dim=1)

    if len(timesteps) == 0:  # strength so small that nothing is denoised
        return ldm.decode(ldm.encode_mean(s) * sf)
    if config.mode == "inpaint" and config.effective_strength >= 1.0:
        latents = noise.initial * scheduler.init_noise_sigma
    else:
        latents = scheduler.add_noise(_encode(ldm, s, noise.image_posterior) * sf, noise.initial,
                                      timesteps[:1].repeat(batch))

    guided = config.guidance > 1.0 and not guidance_changes_nothing(ldm, cond)
    added = unet_kwargs(ldm, cond, batch, height, width, guided)  # SDXL's pooled embeddings and time ids
    embeddings = (torch.cat([cond.uncond, cond.cond]) if guided else cond.cond).to(device, ldm.unet.dtype)
    embeddings = embeddings.repeat_interleave(batch, dim=0)
    if extra is not None and guided:
        extra = torch.cat([extra, extra])

    def denoise(latents: torch.Tensor, extra: torch.Tensor | None, variance: torch.Tensor | None,
                t: torch.Tensor) -> torch.Tensor:
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        if extra is not None:
            model_input = torch.cat([model_input, extra], dim=1)
        model_input = model_input.to(ldm.unet.dtype)  # the weights' dtype in, fp32 out: latents stay fp32
        with ldm.autocast():
            eps = ldm.unet(model_input, t, encoder_hidden_states=embeddings, **added).sample.float()
        if guided:
            uncond, text = eps.chunk(2)
            eps = uncond + config.guidance * (text - uncond)
        return scheduler.step(eps, t, latents, eta=config.eta, variance_noise=variance).prev_sample

    use_checkpoint = config.checkpointing and torch.is_grad_enabled()
    for index, t in enumerate(timesteps):
        variance = noise.variance[index] if config.eta > 0 else None
        if use_checkpoint:
            latents = checkpoint(denoise, latents, extra, variance, t, use_reentrant=False)
        else:
            latents = denoise(latents, extra, variance, t)
    return ldm.decode(latents)


def _encode(ldm: LatentDiffusion, pixels: torch.Tensor, posterior: torch.Tensor | None) -> torch.Tensor:
    """A posterior sample with the drawn noise; the mean when the caller's noise has none (old callers)."""
    return ldm.encode_mean(pixels) if posterior is None else ldm.encode_sample(pixels, posterior)


def paste_back(edited: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put the original pixels back in the kept region (ref ``recover_image``): only generated pixels differ."""
    mask = binarize_mask(mask).to(edited.device)
    return mask * edited + (1 - mask) * original.to(edited.device)


@register_edit_backend("own")
def own_edit(ldm: LatentDiffusion, pixels: torch.Tensor, cond: Conditioning, config: EditConfig,
             generator: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`edit_forward` as an edit backend: B×3×H×W in [0, 1]."""
    return ((edit_forward(ldm, pixels, cond, config, generator, mask) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def edit_image(ldm: LatentDiffusion, image: torch.Tensor, cond: Conditioning, config: EditConfig, seed: int,
               mask: torch.Tensor | None = None, paste: bool = True,
               original: torch.Tensor | None = None, backend: str = "own") -> torch.Tensor:
    """The evaluation edit of one C×H×W image in [0, 1] with a CPU generator seeded by ``seed``; C×H×W in [0, 1].

    Use the same seed for a clean image and its immunized copy (common random numbers). Inpainting
    pastes ``original`` (default ``image``) back in the kept region; when ``image`` is an immunized or
    transformed copy, pass the original photo, as PhotoGuard's ``recover_image(edit, init_image, mask)``
    does: pasting the copy back would leave its own perturbation there and overstate the protection.

    ``backend`` pipeline edits through diffusers' ``StableDiffusion{Inpaint,Img2Img}Pipeline`` (what an
    attacker runs; :mod:`.pipelines`), own through :func:`edit_forward`; same seed → same noise in both.
    """
    if backend not in EDIT_BACKENDS:
        raise UsageError(f"`backend` {backend!r}: choose {' or '.join(EDIT_BACKENDS.names())}")
    edit = EDIT_BACKENDS.get(backend)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    out = edit(ldm, image.unsqueeze(0), cond, config, generator, mask)
    if paste and mask is not None and config.mode == "inpaint":
        original = image if original is None else original
        if original.shape != image.shape:
            raise InvalidInput(f"the original photo is {'×'.join(map(str, original.shape))} but the edited image is "
                               f"{'×'.join(map(str, image.shape))}; paste-back needs one size")
        out = paste_back(out, original.unsqueeze(0), mask)
    return out[0].cpu()
