"""Mixup and CutMix, DeiT's batch-level augmentation (Touvron et al. 2021: mixup α 0.8, cutmix α 1.0,
one of them per image, label smoothing 0.1), as timm's ``Mixup(mode="elem")`` does it.

Every draw of an image (mix or not, which of the two, λ, the box) comes from (seed, its record id, epoch),
so it is the same in any worker or rank. The image it mixes with is the one at the mirrored position of
its batch (timm's choice): mixing, alone among the augmentations, depends on which records share a batch,
so on the batch size and the worker count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from confidently.errors import UsageError
from confidently.run.seeding import derive_seed

DEIT_MIXUP, DEIT_CUTMIX, DEIT_LABEL_SMOOTHING = 0.8, 1.0, 0.1


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot rows with ``smoothing`` spread over every class (timm's ``one_hot(..., on, off)``)."""
    off = smoothing / num_classes
    out = torch.full((len(labels), num_classes), off, device=labels.device)
    return out.scatter_(1, labels[:, None], 1.0 - smoothing + off)


@dataclass(frozen=True)
class BatchMix:
    """Mixup (α ``mixup``) or CutMix (α ``cutmix``) per image, with probability ``prob``; with both on, CutMix
    is chosen with probability ``switch_prob``. Returns the mixed images and soft targets."""

    mixup: float = DEIT_MIXUP
    cutmix: float = DEIT_CUTMIX
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = DEIT_LABEL_SMOOTHING

    def __post_init__(self) -> None:
        if self.mixup < 0 or self.cutmix < 0 or not (self.mixup or self.cutmix):
            raise UsageError(f"mixup α {self.mixup} and cutmix α {self.cutmix}: give one > 0 (and neither < 0)")
        if not 0 <= self.prob <= 1 or not 0 <= self.switch_prob <= 1:
            raise UsageError("mixing probabilities must lie in [0, 1]")

    def draws(self, record_id: str, seed: int, epoch: int, height: int, width: int
              ) -> tuple[float, tuple[int, int, int, int] | None]:
        """λ (the share of the image's own label) and, for CutMix, the box ``(y0, y1, x0, x1)`` pasted from the
        partner; λ = 1 leaves the image alone."""
        rng = np.random.default_rng(derive_seed(seed, record_id, "mix", epoch))
        if rng.random() >= self.prob:
            return 1.0, None
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < self.switch_prob)
        lam = float(rng.beta(self.cutmix, self.cutmix) if use_cutmix else rng.beta(self.mixup, self.mixup))
        if not use_cutmix:
            return lam, None
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return 1.0 - (y1 - y0) * (x1 - x0) / (height * width), (y0, y1, x0, x1)  # λ of the box actually cut

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str], num_classes: int,
                 seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2:]
        partner = torch.arange(len(images) - 1, -1, -1, device=images.device)
        mixed = images.clone()
        lams = torch.ones(len(images), device=images.device)
        for i, record_id in enumerate(ids):
            lam, box = self.draws(record_id, seed, epoch, height, width)
            if box is not None:
                y0, y1, x0, x1 = box
                mixed[i, :, y0:y1, x0:x1] = images[partner[i], :, y0:y1, x0:x1]
            elif lam < 1.0:
                mixed[i] = lam * images[i] + (1.0 - lam) * images[partner[i]]
            lams[i] = lam
        own = soft_targets(labels, num_classes, self.label_smoothing)
        return mixed, lams[:, None] * own + (1.0 - lams[:, None]) * own[partner]
