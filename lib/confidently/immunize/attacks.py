"""Immunization: projected gradient descent on pixels against a latent diffusion model (spec §2.2–2.5).

One front door, :func:`immunize`, with the methods registered by name in :data:`METHODS`
(``encoder``, ``diffusion``, ``random``) and the norms in :data:`NORMS` (``linf``, ``l2``): a new
method or norm is one registered class.

**Projection, not the thesis pseudo-code.** Algorithms 4/5 of the thesis keep a running δ and
write x_im ← x_im − δ every iteration, which accumulates δ and leaves the ε-ball. We implement
the intended (and reference-code) semantics: signed-gradient *descent* on the distance to the
target, x_adv ← Π(x_adv − k·sign ∇), with Π the projection onto {‖x_adv − x‖∞ ≤ ε} ∩ [0, 1]
(for ℓ∞ the two clips commute with each other's result: the intersection of two boxes).

ε and step sizes are on the [0, 1] pixel scale (the reference code's numbers are on [−1, 1]:
divide by 2). Losses are squared L2 sums, computed in fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.editing import EditConfig, EditNoise, binarize_mask, edit_forward, edit_timesteps
from confidently.immunize.models import LatentDiffusion
from confidently.immunize.presets import PRESETS, SCHEDULES
from confidently.immunize.text import Conditioning
from confidently.registry import Registry
from confidently.run.seeding import derive_seed

# ---------------------------------------------------------------------------------------------------------
# Configuration (the presets and parse_fraction live in presets.py, light enough for --help)


@dataclass(frozen=True)
class PGDConfig:
    """One PGD run: budget ``eps`` and ``step`` on the [0, 1] scale, ``steps`` iterations."""

    eps: float = 16 / 255
    step: float = 2 / 255
    steps: int = 200
    norm: str = "linf"
    random_start: bool = False
    step_schedule: str = "constant"
    grad_reps: int = 1

    def __post_init__(self):
        limit = 1.0 if self.norm == "linf" else math.inf
        if not 0 < self.eps <= limit and not (self.eps == 0 and self.norm == "linf"):
            raise UsageError(f"--eps {self.eps:g}: must lie in (0, 1] on the [0, 1] pixel scale (e.g. 16/255)"
                             if self.norm == "linf" else f"--eps {self.eps:g}: must be > 0")
        if self.step <= 0:
            raise UsageError(f"--step {self.step:g}: must be > 0")
        if self.steps < 0:
            raise UsageError(f"--steps {self.steps}: must be >= 0")
        if self.step_schedule not in SCHEDULES:
            raise UsageError(f"--step-schedule {self.step_schedule!r}: choose {' or '.join(SCHEDULES)}")
        if self.grad_reps < 1:
            raise UsageError(f"--grad-reps {self.grad_reps}: must be >= 1")
        NORMS.get(self.norm)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PGDConfig:
        if name not in PRESETS:
            raise UsageError(f"--preset {name!r}: choose {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def step_size(self, n: int) -> float:
        """k_n: constant, or the reference code's linear decay k − (k − k/100)·n/N."""
        if self.step_schedule == "linear" and self.steps:
            return self.step - (self.step - self.step / 100) * n / self.steps
        return self.step


# ---------------------------------------------------------------------------------------------------------
# Norms: how to step and how to project


class LinfNorm:
    """Signed-gradient descent; projection = clip to the ε-box around x0, then to [0, 1]."""

    name = "linf"

    @staticmethod
    def descend(x: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
        return x - step * grad.sign()

    @staticmethod
    def project(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0, 1)

    @staticmethod
    def random_start(x0: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(x0.shape, generator=generator).to(x0.device) * 2 - 1
        return (x0 + eps * noise).clamp(0, 1)

    @staticmethod
    def size(delta: torch.Tensor) -> float:
        return float(delta.abs().max()) if delta.numel() else 0.0


class L2Norm:
    """Normalised-gradient descent (reference ``super_l2``); projection onto the ε-ball, then [0, 1].

    ε is the L2 radius of the whole image's δ on the [0, 1] scale (the reference's ε = 16 on [−1, 1] is 8 here).
    The [0, 1] clip after the ball keeps the result inside the ball (clipping towards x0 ∈ [0,1]³ only
    shrinks |δ| entry-wise).
    """

    name = "l2"

    @staticmethod
    def descend(x: torch.Tensor, grad: torch.Tensor, step: float) -> torch.Tensor:
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
        return x - step * grad / norm

    @staticmethod
    def project(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
        delta = x - x0
        norm = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.ndim - 1))
        delta = delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)
        return (x0 + delta).clamp(0, 1)

    @staticmethod
    def random_start(x0: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        direction = torch.randn(x0.shape, generator=generator).to(x0.device)
        radius = torch.rand((x0.shape[0],) + (1,) * (x0.ndim - 1), generator=generator).to(x0.device)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * (x0.ndim - 1))
        return (x0 + eps * radius * direction).clamp(0, 1)

    @staticmethod
    def size(delta: torch.Tensor) -> float:
        return float(delta.flatten(1).norm(dim=1).max()) if delta.numel() else 0.0


NORMS: Registry[Any] = Registry("norm")
NORMS.register("linf")(LinfNorm)
NORMS.register("l2")(L2Norm)


# ---------------------------------------------------------------------------------------------------------
# The PGD loop


@dataclass
class PGDResult:
    """``losses``: per iteration, the loss of the whole batch (its sum over photos); ``photo_losses[i]``: photo
    i's own per iteration (equal to ``losses`` for one photo)."""

    x_adv: torch.Tensor
    losses: list[float]
    photo_losses: list[list[float]] = field(default_factory=list)


# (x_adv, iteration, rep) -> fp32 loss: one per photo (shape B), or one scalar for the whole batch
Objective = Callable[[torch.Tensor, int, int], torch.Tensor]


def _per_photo(loss: torch.Tensor, batch: int) -> torch.Tensor:
    """The objective's value per photo (B,); a scalar objective gives its total to a lone photo."""
    values = loss.reshape(-1)
    if values.numel() == batch:
        return values
    if values.numel() == 1 and batch == 1:
        return values
    raise ValueError(f"the objective returned {values.numel()} values for a batch of {batch} photos: "
                     "return one per photo (summed for the gradient) or a scalar for one photo")


def pgd(x0: torch.Tensor, objective: Objective, config: PGDConfig, *, keep: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None, loss_scale: float = 1.0,
        on_step: Callable[[int, float], None] | None = None,
        on_photo_step: Callable[[int, list[float]], None] | None = None,
        rows: list[int] | None = None) -> PGDResult:
    """Minimise ``objective`` over x in {‖x − x0‖ ≤ ε} ∩ [0, 1] (∩ {x = x0 where keep == 0}).

    ``keep`` (B×1×H×W, 1 = may be perturbed) confines the perturbation and zeroes the gradient outside.
    The gradient is averaged over ``config.grad_reps`` sequential evaluations (EOT); ``loss_scale``
    multiplies the loss before backward (fp16 underflow guard; the step direction ignores it).

    **A batch is B independent attacks.** The objective returns one loss per photo and the gradient is that
    of their *sum*, so photo i's gradient is its solo gradient; the step, the projection (ℓ2: per photo's
    norm) and the random start (``generator``: a list, one per photo, each drawing that photo's start as if
    alone; ``rows``: how many consecutive photos each generator starts, default one) are per photo too,
    and the fp16 overflow fallback is chosen per photo. A photo's result does not
    depend on its batch, up to the batched kernels' rounding (tests/immunize/test_batching.py).
    """
    norm = NORMS.get(config.norm)
    x0 = x0.detach()
    batch = x0.shape[0]
    if keep is not None:
        keep = keep.to(x0.device, x0.dtype)

    def confine(x: torch.Tensor) -> torch.Tensor:
        return x if keep is None else keep * x + (1 - keep) * x0

    if config.eps == 0 or config.steps == 0:
        return PGDResult(x0.clone(), [], [[] for _ in range(batch)])
    x = x0.clone()
    if config.random_start:
        if isinstance(generator, (list, tuple)):
            rows = rows or [1] * len(generator)
            if len(rows) != len(generator) or sum(rows) != batch:
                raise ValueError(f"{len(generator)} generators for {rows} of a batch of {batch} photos")
            start = torch.cat([norm.random_start(part, config.eps, g)
                               for part, g in zip(x0.split(rows), generator, strict=True)])
        else:
            start = norm.random_start(x0, config.eps, generator or torch.Generator())
        x = confine(norm.project(start, x0, config.eps))
    losses: list[float] = []
    photo_losses: list[list[float]] = [[] for _ in range(batch)]
    for n in range(config.steps):
        grad = torch.zeros_like(x)
        totals = torch.zeros(batch, dtype=torch.float64)
        for rep in range(config.grad_reps):
            x_var = x.detach().requires_grad_(True)
            values = _per_photo(objective(x_var, n, rep), batch)
            (part,) = torch.autograd.grad(values.sum() * loss_scale, x_var)
            if loss_scale != 1.0:
                part = part / loss_scale
                overflow = ~torch.isfinite(part).flatten(1).all(dim=1)
                if overflow.any():  # overflow under the scale: redo unscaled, for the photos that overflowed only
                    (plain,) = torch.autograd.grad(_per_photo(objective(x_var, n, rep), batch).sum(), x_var)
                    part = torch.where(overflow.view(-1, *[1] * (part.ndim - 1)), plain, part)
            grad += part.float()
            totals += values.detach().double().cpu()
        if keep is not None:
            grad = grad * keep  # ref-code multiplies the gradient by (1 - mask) explicitly
        means = [float(total) / config.grad_reps for total in totals]
        for i, value in enumerate(means):
            photo_losses[i].append(value)
        losses.append(float(totals.sum()) / config.grad_reps)
        x = confine(norm.project(norm.descend(x, grad, config.step_size(n)), x0, config.eps)).detach()
        if on_step is not None:
            on_step(n, losses[-1])
        if on_photo_step is not None:
            on_photo_step(n, means)
    return PGDResult(x, losses, photo_losses)


# ---------------------------------------------------------------------------------------------------------
# Targets, masks and requests


TARGETS = ("gray", "black", "noise")


def target_image(target: str | torch.Tensor, like: torch.Tensor, generator: torch.Generator | None = None,
                 base_dir: str | Path | None = None) -> torch.Tensor:
    """The target x_target on [0, 1]: gray (0.5, the default), black, seeded uniform noise, an image PATH or tensor."""
    if isinstance(target, torch.Tensor):
        image = target
    elif target == "gray":
        return torch.full_like(like, 0.5)
    elif target == "black":
        return torch.zeros_like(like)
    elif target == "noise":
        return torch.rand(like.shape, generator=generator or torch.Generator()).to(like.device)
    else:
        from confidently.immunize.pixels import fit_image
        from confidently.io.images import load_image

        image = fit_image(load_image(target, base_dir), like.shape[-2:])
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if tuple(image.shape[-2:]) != tuple(like.shape[-2:]):
        raise InvalidInput(f"target is {image.shape[-2]}×{image.shape[-1]}, image is {like.shape[-2]}×{like.shape[-1]}")
    return image.to(like.device, like.dtype).expand_as(like)


@dataclass
class Request:
    """One image to immunize: pixels B×3×H×W in [0, 1], optional mask (1 = regenerate), and context."""

    x: torch.Tensor
    mask: torch.Tensor | None = None
    mode: str = "img2img"
    target: str | torch.Tensor = "gray"
    seed: int = 1234
    key: str = ""
    cond: Conditioning | None = None
    edit: EditConfig | None = None
    base_dir: str | Path | None = None
    noise: str = "fresh"  # diffusion EOT noise: fresh per iteration (ref-code) or fixed per rep

    @property
    def keep(self) -> torch.Tensor | None:
        """Where the perturbation may live: the kept region (mask == 0), or everywhere."""
        return None if self.mask is None else 1 - binarize_mask(self.mask)

    def generator(self, *keys: object) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, self.key, *keys))


@dataclass
class Immunized:
    """The result: x_adv, the losses, what was measured, and method-specific tensors (z_target, z_adv)."""

    x: torch.Tensor
    x_adv: torch.Tensor
    method: str
    losses: list[float]
    loss_init: float | None
    loss_final: float | None
    seconds: float
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def delta(self) -> torch.Tensor:
        return self.x_adv - self.x


# ---------------------------------------------------------------------------------------------------------
# Methods


METHODS: Registry[Any] = Registry("immunization method")


def _fp16_scale(ldm: LatentDiffusion) -> float:
    """The loss scale against fp16 gradient underflow: under fp16 autocast on CUDA, or with fp16 weights anywhere."""
    fp16 = (ldm.device.type == "cuda" and ldm.dtype == torch.float16) or ldm.weights_dtype == torch.float16
    return 1024.0 if fp16 else 1.0


PhotoStep = Callable[[int, list[float]], None]  # (iteration, each request's loss) in a batch


def _rows(requests: list[Request]) -> list[int]:
    return [int(request.x.shape[0]) for request in requests]


def _by_request(values: list[float] | torch.Tensor, rows: list[int]) -> list[float]:
    """Per-photo values summed over each request's photos (a request may carry several)."""
    values = [float(v) for v in values]
    out, at = [], 0
    for count in rows:
        out.append(sum(values[at:at + count]) if count > 1 else values[at])
        at += count
    return out


def _cat_keep(requests: list[Request]) -> torch.Tensor | None:
    keeps = [request.keep for request in requests]
    return None if keeps[0] is None else torch.cat([k.to(requests[0].x.device) for k in keeps])


def _batched_pgd(ldm: LatentDiffusion, requests: list[Request], loss: Objective, config: PGDConfig,
                 on_step: PhotoStep | None) -> PGDResult:
    rows = _rows(requests)
    photo_step = None if on_step is None else (lambda n, means: on_step(n, _by_request(means, rows)))
    return pgd(torch.cat([request.x for request in requests]), loss, config, keep=_cat_keep(requests),
               generator=[request.generator("start") for request in requests], rows=rows,
               loss_scale=_fp16_scale(ldm), on_photo_step=photo_step)


def _request_losses(result: PGDResult, rows: list[int]) -> list[list[float]]:
    """Each request's loss per iteration (its photos' sum)."""
    per_iteration = [_by_request([photo[n] for photo in result.photo_losses], rows) for n in range(len(result.losses))]
    return [[values[i] for values in per_iteration] for i in range(len(rows))]


def _split(x: torch.Tensor, rows: list[int]) -> list[torch.Tensor]:
    return list(x.split(rows))


@METHODS.register("encoder")
class EncoderAttack:
    """Push the VAE latent mean toward the target's: min ‖E(x_adv) − E(x_target)‖² (thesis eq. 4.4).

    Inpaint mode encodes what the editor encodes: x·(1 − mask), for both the image and the target.
    A batch of requests is encoded at once, with one loss per photo (see :func:`pgd`).
    """

    name = "encoder"
    needs = ("vae",)

    def batch_objective(self, ldm: LatentDiffusion, requests: list[Request]) -> tuple[Objective, dict[str, Any]]:
        first = requests[0]
        hidden = None if first.mode != "inpaint" or first.mask is None else \
            torch.cat([binarize_mask(request.mask) for request in requests])

        def encode(x: torch.Tensor) -> torch.Tensor:
            s = x * 2 - 1
            if hidden is not None:
                s = s * (hidden.to(s.device) < 0.5)
            return ldm.encode_mean(s)

        with torch.no_grad():
            z_target = encode(torch.cat([target_image(r.target, r.x, r.generator("target"), r.base_dir)
                                         for r in requests]))

        def loss(x: torch.Tensor, iteration: int = 0, rep: int = 0) -> torch.Tensor:
            return (encode(x) - z_target).pow(2).flatten(1).sum(1)

        return loss, {"z_target": z_target, "encode": encode}

    def objective(self, ldm: LatentDiffusion, request: Request) -> tuple[Objective, dict[str, Any]]:
        """One request's objective: the squared distance summed over its photos (a scalar)."""
        per_photo, extras = self.batch_objective(ldm, [request])
        return (lambda x, iteration=0, rep=0: per_photo(x, iteration, rep).sum()), extras

    def run_batch(self, ldm: LatentDiffusion, requests: list[Request], config: PGDConfig,
                  on_step: PhotoStep | None = None) -> list[Immunized]:
        start = time.perf_counter()
        rows = _rows(requests)
        loss, extras = self.batch_objective(ldm, requests)
        x0 = torch.cat([request.x for request in requests])
        result = _batched_pgd(ldm, requests, loss, config, on_step)
        with torch.no_grad():
            loss_init = _by_request(loss(x0).cpu(), rows)
            z_adv = extras["encode"](result.x_adv)
            loss_final = _by_request((z_adv - extras["z_target"]).pow(2).flatten(1).sum(1).cpu(), rows)
        seconds = (time.perf_counter() - start) / len(requests)
        return [Immunized(r.x, x_adv, self.name, losses, init, final, seconds,
                          {"z_target": z_t[0], "z_adv": z_a[0]})
                for r, x_adv, losses, init, final, z_t, z_a in zip(
                    requests, _split(result.x_adv, rows), _request_losses(result, rows), loss_init, loss_final,
                    _split(extras["z_target"], rows), _split(z_adv, rows), strict=True)]

    def run(self, ldm: LatentDiffusion, request: Request, config: PGDConfig, on_step=None) -> Immunized:
        return self.run_batch(ldm, [request], config, _solo(on_step))[0]


def _solo(on_step: Callable[[int, float], None] | None) -> PhotoStep | None:
    return None if on_step is None else (lambda n, losses: on_step(n, losses[0]))


@METHODS.register("diffusion")
class DiffusionAttack:
    """Push the output of the whole (few-step) editing process toward the target (thesis eq. 4.5).

    f = encode → K denoising steps (checkpointed) → decode, with the attack prompt and the record's mask.
    EOT: each PGD iteration averages ``grad_reps`` sequential gradients over sampling noise drawn
    fresh per (iteration, rep) (``noise="fresh"``, ref-code) or fixed per rep (``"fixed"``: a
    deterministic objective). ``loss_init``/``loss_final`` use one reference draw for both.
    In a batch every photo draws its own noise from its own (seed, id) generator, as alone, and the
    requests share one attack conditioning and edit configuration (:func:`batchable`).
    """

    name = "diffusion"
    needs = ("vae", "unet", "scheduler", "text")

    def batch_objective(self, ldm: LatentDiffusion, requests: list[Request]) -> Objective:
        first = requests[0]
        if first.cond is None or first.edit is None:
            raise UsageError("the diffusion attack needs the attack prompt's conditioning and an EditConfig")
        config = first.edit
        s_target = torch.cat([target_image(r.target, r.x, r.generator("target"), r.base_dir)
                              for r in requests]) * 2 - 1
        factor, channels = ldm.downsampling, int(ldm.vae.config.latent_channels)
        shapes = [(r.x.shape[0], channels, r.x.shape[-2] // factor, r.x.shape[-1] // factor) for r in requests]
        count = len(edit_timesteps(ldm.new_scheduler(), config.steps, config.effective_strength))
        mask = torch.cat([r.mask for r in requests]) if first.mode == "inpaint" and first.mask is not None else None

        def loss(x: torch.Tensor, iteration: int | str = 0, rep: int = 0) -> torch.Tensor:
            noise = EditNoise.concat([
                EditNoise.draw(r.generator(*(("noise", rep) if r.noise == "fixed" else ("noise", iteration, rep))),
                               shape, count, config.eta, ldm.device, config.mode, config.effective_strength)
                for r, shape in zip(requests, shapes, strict=True)])
            out = edit_forward(ldm, x, first.cond, config, None, mask=mask, noise=noise)
            return (out.float() - s_target.to(out.device)).pow(2).flatten(1).sum(1)

        return loss

    def objective(self, ldm: LatentDiffusion, request: Request) -> Objective:
        """One request's objective: the squared distance summed over its photos (a scalar)."""
        per_photo = self.batch_objective(ldm, [request])
        return lambda x, iteration=0, rep=0: per_photo(x, iteration, rep).sum()

    def run_batch(self, ldm: LatentDiffusion, requests: list[Request], config: PGDConfig,
                  on_step: PhotoStep | None = None) -> list[Immunized]:
        for request in requests:
            if request.noise not in ("fresh", "fixed"):
                raise UsageError(f"--eot-noise {request.noise!r}: choose fresh or fixed")
        start = time.perf_counter()
        rows = _rows(requests)
        loss = self.batch_objective(ldm, requests)
        result = _batched_pgd(ldm, requests, loss, config, on_step)
        reference = 0 if requests[0].noise == "fixed" else "reference"
        with torch.no_grad():
            loss_init = _by_request(loss(torch.cat([r.x for r in requests]), reference).cpu(), rows)
            loss_final = _by_request(loss(result.x_adv, reference).cpu(), rows)
        seconds = (time.perf_counter() - start) / len(requests)
        return [Immunized(r.x, x_adv, self.name, losses, init, final, seconds)
                for r, x_adv, losses, init, final in zip(requests, _split(result.x_adv, rows),
                                                         _request_losses(result, rows), loss_init, loss_final,
                                                         strict=True)]

    def run(self, ldm: LatentDiffusion, request: Request, config: PGDConfig, on_step=None) -> Immunized:
        return self.run_batch(ldm, [request], config, _solo(on_step))[0]


@METHODS.register("random")
class RandomNoise:
    """Baseline: x + U[−ε, ε] per pixel, clipped to [0, 1], masked like the attacks (spec §2.5)."""

    name = "random"
    needs = ("vae",)

    def run(self, ldm: LatentDiffusion | None, request: Request, config: PGDConfig, on_step=None) -> Immunized:
        start = time.perf_counter()
        x0 = request.x
        if config.eps == 0:
            x_adv = x0.clone()
        else:
            norm = NORMS.get(config.norm)
            x_adv = norm.project(norm.random_start(x0, config.eps, request.generator("random")), x0, config.eps)
            keep = request.keep
            if keep is not None:
                keep = keep.to(x0.device)
                x_adv = keep * x_adv + (1 - keep) * x0
        return Immunized(x0, x_adv, self.name, [], None, None, time.perf_counter() - start)

    def run_batch(self, ldm: LatentDiffusion | None, requests: list[Request], config: PGDConfig,
                  on_step: PhotoStep | None = None) -> list[Immunized]:
        """No model in the loop: each photo's noise is drawn from its own generator, so batching changes nothing."""
        return [self.run(ldm, request, config) for request in requests]


def _same_conditioning(a: Conditioning | None, b: Conditioning | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or a.same(b)  # SDXL's pooled embeddings too


def batchable(a: Request, b: Request) -> bool:
    """Whether two requests can share a batch: the same image size, mode, mask presence, attack edit,
    EOT noise scheme and attack conditioning (their targets, seeds, ids and masks may differ)."""
    return (tuple(a.x.shape[1:]) == tuple(b.x.shape[1:]) and a.mode == b.mode
            and (a.mask is None) == (b.mask is None) and a.edit == b.edit and a.noise == b.noise
            and _same_conditioning(a.cond, b.cond))


def check_request(ldm: LatentDiffusion | None, request: Request) -> None:
    """The checks :func:`immunize` makes of a request (mask size, image size), as :class:`InvalidInput`."""
    if request.mask is not None and tuple(request.mask.shape[-2:]) != tuple(request.x.shape[-2:]):
        raise InvalidInput(f"mask is {request.mask.shape[-2]}×{request.mask.shape[-1]}, image is "
                           f"{request.x.shape[-2]}×{request.x.shape[-1]}", field="mask")
    if ldm is not None:
        ldm.check_size(*request.x.shape[-2:])


def _checked(ldm: LatentDiffusion | None, request: Request) -> Request:
    check_request(ldm, request)
    return replace(request, x=request.x.to(ldm.device if ldm is not None else request.x.device).float())


def immunize(ldm: LatentDiffusion, request: Request, method: str = "encoder", config: PGDConfig | None = None,
             on_step: Callable[[int, float], None] | None = None) -> Immunized:
    """Immunize ``request.x`` with a registered method (``encoder``, ``diffusion``, ``random``)."""
    config = config or PGDConfig()
    request = _checked(ldm, request)
    return METHODS.get(method)().run(ldm, request, config, on_step)


def immunize_batch(ldm: LatentDiffusion, requests: list[Request], method: str = "encoder",
                   config: PGDConfig | None = None, on_step: PhotoStep | None = None) -> list[Immunized]:
    """Immunize several requests in one batch on the device: each result is the one :func:`immunize` gives
    the request alone (same seed → same random start and noise; per-photo loss, step and projection), up
    to the rounding of batched kernels. The requests must be :func:`batchable` with each other.
    ``on_step(n, losses)`` gets each request's loss after iteration n."""
    config = config or PGDConfig()
    if not requests:
        return []
    requests = [_checked(ldm, request) for request in requests]
    for request in requests[1:]:
        if not batchable(requests[0], request):
            raise ValueError(f"requests {requests[0].key!r} and {request.key!r} cannot share a batch "
                             "(size, mode, mask, edit, noise or conditioning differ): group them with batchable()")
    runner = METHODS.get(method)()
    if not hasattr(runner, "run_batch"):  # a method registered without batching: one request at a time
        return [runner.run(ldm, request, config) for request in requests]
    return runner.run_batch(ldm, requests, config, on_step)
