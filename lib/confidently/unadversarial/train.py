"""Optimising unadversarial patches for a fixed model, and measuring them (thesis §3.2, App. C.2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from confidently.data.corruptions import SEVERITIES, corrupt, list_corruptions
from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.run.seeding import derive_seed, record_seeds
from confidently.unadversarial.patches import Placement, composite


@dataclass(frozen=True)
class PatchConfig:
    """The optimisation budget and, optionally, corruptions applied in the loop after compositing
    (``corruptions``: each sample gets one drawn uniformly, at a severity drawn from ``severities``,
    with probability ``corruption_prob``; default none, as in the thesis)."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "sign"
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = SEVERITIES
    corruption_prob: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("sign", "adam"):
            raise UsageError(f"--optimizer {self.optimizer!r}: choose sign (the reference code) or adam")
        unknown = [c for c in self.corruptions if c not in list_corruptions()]
        if unknown:
            raise UsageError(f"--train-corruptions {','.join(unknown)}: choose from {', '.join(list_corruptions())}")
        if self.corruptions and (not self.severities or any(s not in SEVERITIES for s in self.severities)):
            raise UsageError(f"--train-severities {list(self.severities)}: choose among 1..5")
        if not 0 <= self.corruption_prob <= 1:
            raise UsageError(f"--train-corruption-prob {self.corruption_prob}: expected a probability in [0, 1]")


def corrupt_with_gradient(images: torch.Tensor, name: str, severity: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``corrupt`` that lets gradients through: exactly for corruptions written in torch (gaussian noise
    and blur, contrast, brightness, fog), straight through (∂out/∂x := I) for those run by the
    ``imagecorruptions`` reference in NumPy: ``out = x + stopgrad(corrupt(x) − x)``. A quantising
    corruption written with ``torch.round`` should detach its output so that it gets the straight-through
    gradient too."""
    out = corrupt(images, name, severity, generator)
    if images.requires_grad and out.grad_fn is None:
        out = images + (out - images).detach()
    return out


def random_corruptions(images: torch.Tensor, names: Sequence[str], severities: Sequence[int],
                       generator: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """One corruption and severity per image, drawn from ``generator`` (each image corrupted with
    probability ``prob``); differentiable in ``images`` (see :func:`corrupt_with_gradient`)."""
    if not names:
        return images
    count = len(images)
    chosen = torch.rand(count, generator=generator) < prob
    which = torch.randint(0, len(names), (count,), generator=generator)
    level = torch.randint(0, len(severities), (count,), generator=generator)
    out = images.clone()
    for n, name in enumerate(names):
        for s, severity in enumerate(severities):
            rows = torch.nonzero(chosen & (which == n) & (level == s)).flatten()
            if len(rows):
                out[rows.to(images.device)] = corrupt_with_gradient(images[rows.to(images.device)], name,
                                                                    severity, generator)
    return out


def train_patches(model: Classifier, images: torch.Tensor, labels: torch.Tensor, patches: torch.Tensor,
                  placement: Placement, config: PatchConfig, generator: torch.Generator,
                  on_step: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Minimise the model's loss on patched images over random placements; the model never changes.

    ``sign`` steps P ← clip(P − lr·sign(∇P), 0, 1): a class absent from a batch has zero gradient and
    keeps its patch bit-identical. Returns the patches and the loss per step.
    """
    device = model.normalize.mean.device
    model.eval().requires_grad_(False)
    patches = patches.clone().to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([patches], lr=config.lr) if config.optimizer == "adam" else None
    losses = []
    started = time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(0, len(images), (min(config.batch_size, len(images)),), generator=generator)
        x, y = images[index].to(device), labels[index].to(device)
        x = composite(x, patches[y], placement.sample(len(y), generator))
        x = random_corruptions(x, config.corruptions, config.severities, generator, config.corruption_prob)
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, patches)
        with torch.no_grad():
            if optimizer is None:
                patches -= config.lr * grad.sign()
            else:
                present = torch.zeros(len(patches), dtype=torch.bool, device=device)
                present[y] = True
                grad[~present] = 0  # absent classes must not drift under momentum
                patches.grad = grad
                optimizer.step()
            patches.clamp_(0, 1)
        losses.append(float(loss.detach()))
        if on_step is not None and (step + 1) % max(1, config.steps // 10) == 0:
            on_step({"step": step + 1, "loss": sum(losses[-10:]) / len(losses[-10:]),
                     "seconds": time.perf_counter() - started})
    return patches.detach().cpu(), losses


def conflict_classes(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """For each image a class other than its own, uniformly and seeded: whose patch it carries in the
    conflict test (thesis Fig. 3.5)."""
    if num_classes < 2:
        raise UsageError("the conflict test needs at least two classes")
    generator = torch.Generator().manual_seed(derive_seed(seed, "conflict"))
    return (labels + torch.randint(1, num_classes, labels.shape, generator=generator)) % num_classes


def evaluate_arms(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
                  arms: dict[str, torch.Tensor | None], placement: Placement, corruptions: Sequence[str],
                  severities: Sequence[int], seed: int, batch_size: int = 256, *,
                  warps: Mapping[str, str] | None = None,
                  conflict: torch.Tensor | None = None, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Accuracy per (arm, corruption, severity); every arm sees the same placements and the same noise,
    each image's noise seeded by (seed, its id in ``ids``, default its position), whatever the batch.
    Corruptions act on the already patched image. Arm ``None`` = no patch; ``warps`` names an arm's
    resampling (``nearest`` for QR codes; default ``bilinear``).

    ``conflict`` (the unadversarial patches, usually) adds rows with arm ``conflict``: each image carries
    the patch of a random *other* class (:func:`conflict_classes`), at the same placements; the row
    reports the fractions predicted as the image's class (``pred_image_frac``, also its ``acc``) and as
    the patch's class (``pred_patch_frac``).
    """
    device = model.normalize.mean.device
    ids = [str(i) for i in range(len(images))] if ids is None else list(ids)
    placements = placement.sample(len(images), torch.Generator().manual_seed(seed))
    rows = [("clean", 0)] + [(name, s) for name in corruptions for s in severities]
    shown: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {arm: (p, labels) for arm, p in arms.items()}
    if conflict is not None:
        if "conflict" in arms:
            raise UsageError("an arm is already called 'conflict'; rename that patch file")
        shown["conflict"] = (conflict, conflict_classes(labels, len(conflict), seed))
    out = []
    model.eval()
    for arm, (patches, pasted) in shown.items():
        warp = (warps or {}).get(arm, "bilinear")
        for corruption, severity in rows:
            predictions = []
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size]
                if patches is not None:
                    x = composite(x, patches[pasted[start:start + batch_size]], placements[start:start + batch_size],
                                  warp)
                if corruption != "clean":
                    x = corrupt(x, corruption, severity, seeds=record_seeds(seed, ids[start:start + batch_size],
                                                                            "corrupt", corruption))
                with torch.no_grad():
                    predictions.append(model(x.to(device)).argmax(1).cpu())
            predicted = torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)
            correct = int((predicted == labels).sum())
            row = {"arm": arm, "corruption": corruption, "severity": severity, "n": len(images),
                   "correct": correct, "acc": correct / len(images) if len(images) else None}
            if arm == "conflict" and conflict is not None:
                row["pred_image_frac"] = row["acc"]
                row["pred_patch_frac"] = float((predicted == pasted).float().mean()) if len(images) else None
            out.append(row)
    return out


def best_images(model: Classifier, images: torch.Tensor, labels: torch.Tensor, num_classes: int, side: int,
                batch_size: int = 256) -> torch.Tensor:
    """Per class, the training image the model finds easiest (lowest loss), resized to p×p (thesis baseline).
    Batches go to the model's device; the losses come back to the CPU, where the images stay."""
    device = model.normalize.mean.device
    losses = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x, y = images[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
            losses.append(F.cross_entropy(model(x), y, reduction="none").cpu())
    losses = torch.cat(losses)
    out = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if not len(members):
            raise UsageError(f"class {c} has no image to take a best-image patch from")
        best = members[losses[members].argmin()]
        out.append(F.interpolate(images[best:best + 1], size=(side, side), mode="area")[0])
    return torch.stack(out).clamp(0, 1)
