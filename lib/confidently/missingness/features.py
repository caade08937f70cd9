"""Removal units ("features") as label maps: which feature each pixel belongs to.

A feature set is an H×W integer map (``-1`` = the pixel belongs to no feature and is never
removed) and a count F. Grid patches are shared by every image; superpixels and boxes are
per image. Removing a set of features is then one gather (:func:`visible_after_removal`),
whatever the unit — so orders, LIME and the top-k test never care which unit made them.
Units are registered by name: a new one is one function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from confidently.errors import InvalidInput, UsageError
from confidently.registry import Registry


@dataclass(frozen=True)
class Features:
    """``labels``: H×W int64 feature id per pixel (-1: no feature); ``count``: F."""

    labels: torch.Tensor
    count: int

    def __post_init__(self):
        if self.count < 1:
            raise InvalidInput("the segmentation has no features to remove")

    def sizes(self) -> torch.Tensor:
        """Pixels per feature (F)."""
        valid = self.labels[self.labels >= 0]
        return torch.bincount(valid.flatten(), minlength=self.count)


UNITS: Registry[Callable[..., Features]] = Registry("unit")
register_unit = UNITS.register
list_units = UNITS.names


def make_features(unit: str, image: torch.Tensor, **options: Any) -> Features:
    """The features of ``image`` (C×H×W in [0, 1]) for a registered ``unit``."""
    return UNITS.get(unit)(image, **options)


def grid_labels(height: int, width: int, patch_size: int, ragged: bool = False) -> torch.Tensor:
    """Row-major q×q patch ids; the last row/column is narrower when q does not divide the side."""
    if patch_size < 1:
        raise UsageError(f"--patch-size {patch_size}: must be >= 1")
    if patch_size > min(height, width):
        raise UsageError(f"--patch-size {patch_size} is larger than the {height}×{width} image")
    if not ragged and (height % patch_size or width % patch_size):
        divisors = [d for d in range(2, min(height, width) + 1) if height % d == 0 and width % d == 0][:6]
        raise UsageError(f"--patch-size {patch_size} does not divide the {height}×{width} image; pick a divisor "
                         f"({', '.join(map(str, divisors))}, ...) or pass --ragged for narrower last patches")
    columns = math.ceil(width / patch_size)
    rows = torch.arange(height) // patch_size
    cols = torch.arange(width) // patch_size
    return rows[:, None] * columns + cols[None, :]


@register_unit("patch")
def grid_features(image: torch.Tensor, patch_size: int = 16, ragged: bool = False, **_: Any) -> Features:
    height, width = image.shape[-2:]
    labels = grid_labels(height, width, patch_size, ragged)
    return Features(labels, int(labels.max()) + 1)


@register_unit("superpixel")
def superpixel_features(image: torch.Tensor, segments: int = 150, compactness: float = 10.0, sigma: float = 1.0,
                        **_: Any) -> Features:
    """SLIC superpixels (the thesis's scikit-image settings), relabelled 0..F-1."""
    from skimage.segmentation import slic

    array = image.permute(1, 2, 0).double().numpy()
    labels = slic(array, n_segments=segments, compactness=compactness, sigma=sigma, start_label=0,
                  channel_axis=-1 if array.shape[-1] > 1 else None)
    return from_label_map(torch.from_numpy(np.ascontiguousarray(labels)))


@register_unit("boxes")
def box_features(image: torch.Tensor, boxes: list | None = None, **_: Any) -> Features:
    """One feature per [x0, y0, x1, y1] box (pixels, exclusive end); smaller boxes win overlaps."""
    height, width = image.shape[-2:]
    if not boxes:
        raise InvalidInput("missing: --unit boxes needs a non-empty \"boxes\" list of [x0, y0, x1, y1]", field="boxes")
    labels = torch.full((height, width), -1, dtype=torch.long)
    parsed = []
    for index, box in enumerate(boxes):
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise InvalidInput(f"box {index} is {box!r}; expected [x0, y0, x1, y1] in pixels", field="boxes")
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
        if x1 <= x0 or y1 <= y0:
            raise InvalidInput(f"box {index} {box!r} is empty inside the {width}×{height} image", field="boxes")
        parsed.append((index, x0, y0, x1, y1))
    for index, x0, y0, x1, y1 in sorted(parsed, key=lambda b: -(b[3] - b[1]) * (b[4] - b[2])):
        labels[y0:y1, x0:x1] = index
    return Features(labels, len(boxes))


def from_label_map(labels: torch.Tensor) -> Features:
    """A user's or SLIC's label map (any integers; negative = no feature) relabelled 0..F-1 in id order."""
    labels = labels.long()
    valid = labels >= 0
    values, inverse = torch.unique(labels[valid], return_inverse=True)
    out = torch.full_like(labels, -1)
    out[valid] = inverse
    return Features(out, len(values))


def visible_after_removal(labels: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """B×H×W visibility (True = kept) from feature removal flags ``removed`` (B×F booleans).

    ``labels`` is one H×W map shared by the batch or B×H×W per row.
    """
    batch = removed.shape[0]
    flags = torch.cat([removed.bool(), removed.new_zeros(batch, 1, dtype=torch.bool)], dim=1)  # column F: "no feature"
    count = removed.shape[1]
    index = labels.to(removed.device).long().masked_fill(labels.to(removed.device) < 0, count)
    if index.ndim == 2:
        return ~flags[:, index.flatten()].view(batch, *index.shape)
    return ~torch.gather(flags, 1, index.flatten(1)).view(batch, *index.shape[1:])


def removal_flags(orders: torch.Tensor, ks: list[int], count: int, keep_top: bool = False) -> torch.Tensor:
    """(len(ks))×F removal flags: the first k features of ``order`` removed (``keep_top``: all but them)."""
    ranks = torch.empty(count, dtype=torch.long)
    ranks[orders.long()] = torch.arange(count)
    k = torch.tensor(ks, dtype=torch.long)[:, None]
    first_k = ranks[None, :] < k
    return ~first_k if keep_top else first_k
