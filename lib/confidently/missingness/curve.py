"""Missingness-bias and top-k curves: predictions as the first k features of an order vanish.

One function serves both tests of thesis ch. 5: ``ablate curve`` removes the first k features
of a removal order, ``ablate topk`` the top-k features of an explanation (or, ``keep_top``,
everything else). All (image, k) pairs of a batch run as rows of a few large forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from confidently.errors import UsageError
from confidently.missingness.features import Features, removal_flags, visible_after_removal
from confidently.missingness.model import MissingnessModel


@dataclass
class Curves:
    """``pred0`` (N) the clean prediction; ``pred`` and ``p_orig`` (N×K): the class predicted and the
    probability of ``pred0`` after each k."""

    ks: list[int]
    pred0: torch.Tensor
    pred: torch.Tensor
    p_orig: torch.Tensor

    def unchanged(self) -> torch.Tensor:
        return self.pred == self.pred0[:, None]

    def first_flip(self) -> list[int | None]:
        """The smallest k whose prediction differs from the clean one, per image (None: never)."""
        out = []
        for row in self.unchanged():
            flipped = torch.nonzero(~row).flatten()
            out.append(self.ks[int(flipped[0])] if len(flipped) else None)
        return out


def curve_ks(count: int, step: int, kmax: int | None = None) -> list[int]:
    """0, step, 2·step, … up to ``kmax`` (default: all F features), always ending at kmax."""
    kmax = count if kmax is None else kmax
    if step < 1:
        raise UsageError(f"--step {step}: must be >= 1")
    if not 0 <= kmax <= count:
        raise UsageError(f"--kmax {kmax}: the image has {count} features to remove")
    ks = list(range(0, kmax + 1, step))
    return ks if ks[-1] == kmax else [*ks, kmax]


def missingness_curves(model: MissingnessModel, images: torch.Tensor, features: Sequence[Features],
                       orders: Sequence[torch.Tensor], ks: Sequence[int], keep_top: bool = False,
                       seeds: Sequence[Sequence[int]] | None = None) -> Curves:
    """Curves for N images (N×C×H×W) with their features, orders and per-k fill seeds (N×K, random fills).

    Every (image, k) row runs through the model, k = 0 too: a fill or token rule that alters an
    image with nothing removed shows as U₀ < 1 instead of being hidden by the clean logits.
    """
    ks = list(ks)
    count = len(images)
    clean_logits = model.logits(images, torch.arange(count), torch.ones(count, *images.shape[-2:], dtype=torch.bool),
                                [seed_row[0] for seed_row in seeds] if seeds is not None else None)
    pred0 = clean_logits.argmax(1)
    rows, masks, row_seeds = [], [], []
    for i, (feats, order) in enumerate(zip(features, orders, strict=True)):
        if max(ks) > feats.count:
            raise UsageError(f"k = {max(ks)} is larger than the {feats.count} features of image {i}")
        flags = removal_flags(order, ks, feats.count, keep_top)
        visible = visible_after_removal(feats.labels, flags)
        rows += [i] * len(ks)
        masks += list(visible)
        if seeds is not None:
            row_seeds += list(seeds[i])
    logits = model.logits(images, torch.tensor(rows), torch.stack(masks), row_seeds if seeds is not None else None)
    logits = logits.view(count, len(ks), -1)
    probs = logits.softmax(-1)
    p_orig = probs.gather(2, pred0.view(-1, 1, 1).expand(-1, len(ks), 1)).squeeze(-1)
    return Curves(ks, pred0, logits.argmax(-1), p_orig)


def curve_auc(ks: Sequence[int], values: Sequence[float]) -> float:
    """Area under a curve over k, normalised by the k range (1.0 = never changes)."""
    if len(ks) < 2:
        return float(values[0]) if values else 0.0
    area = sum((ks[i + 1] - ks[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(ks) - 1))
    return area / (ks[-1] - ks[0])
