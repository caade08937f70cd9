"""Resizing float N×C×H×W (or C×H×W) tensors in [0, 1] on any device, for code that already holds
tensors (trigger images, immunize's transforms); datasets are fitted by :mod:`confidently.data.preprocess`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(images: torch.Tensor, size: int | tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize to ``size`` (an int makes it square); a no-op when already that size."""
    target = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == target:
        return images
    squeeze = images.ndim == 3
    batch = images.unsqueeze(0) if squeeze else images
    out = F.interpolate(batch, size=target, mode="bilinear", align_corners=False,
                        antialias=antialias and target[0] < batch.shape[-2]).clamp_(0, 1)
    return out[0] if squeeze else out
