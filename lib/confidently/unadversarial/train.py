"""Optimising unadversarial patches for a fixed model, and measuring them (thesis §3.2, App. C.2)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from confidently.data.corruptions import corrupt
from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.unadversarial.patches import Placement, composite


@dataclass(frozen=True)
class PatchConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "sign"

    def __post_init__(self):
        if self.optimizer not in ("sign", "adam"):
            raise UsageError(f"--optimizer {self.optimizer!r}: choose sign (the reference code) or adam")


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
        loss = F.cross_entropy(model(composite(x, patches[y], placement.sample(len(y), generator))), y)
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


def evaluate_arms(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
                  arms: dict[str, torch.Tensor | None], placement: Placement, corruptions: Sequence[str],
                  severities: Sequence[int], seed: int, batch_size: int = 256) -> list[dict[str, Any]]:
    """Accuracy per (arm, corruption, severity); every arm sees the same placements and the same noise.
    Corruptions act on the already patched image. Arm ``None`` = no patch."""
    device = model.normalize.mean.device
    placements = placement.sample(len(images), torch.Generator().manual_seed(seed))
    rows = [("clean", 0)] + [(name, s) for name in corruptions for s in severities]
    out = []
    model.eval()
    for arm, patches in arms.items():
        for corruption, severity in rows:
            correct = 0
            for start in range(0, len(images), batch_size):
                x, y = images[start:start + batch_size], labels[start:start + batch_size]
                if patches is not None:
                    x = composite(x, patches[y], placements[start:start + batch_size])
                if corruption != "clean":
                    generator = torch.Generator().manual_seed(seed * 1000 + start)
                    x = corrupt(x, corruption, severity, generator)
                with torch.no_grad():
                    correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            out.append({"arm": arm, "corruption": corruption, "severity": severity, "n": len(images),
                        "correct": correct, "acc": correct / len(images) if len(images) else None})
    return out


def best_images(model: Classifier, images: torch.Tensor, labels: torch.Tensor, num_classes: int, side: int,
                batch_size: int = 256) -> torch.Tensor:
    """Per class, the training image the model finds easiest (lowest loss), resized to p×p (thesis baseline)."""
    losses = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            losses.append(F.cross_entropy(model(images[start:start + batch_size]), labels[start:start + batch_size],
                                          reduction="none"))
    losses = torch.cat(losses)
    out = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if not len(members):
            raise UsageError(f"class {c} has no image to take a best-image patch from")
        best = members[losses[members].argmin()]
        out.append(F.interpolate(images[best:best + 1], size=(side, side), mode="area")[0])
    return torch.stack(out).clamp(0, 1)
