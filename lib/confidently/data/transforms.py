"""Batched image transforms on float N×C×H×W tensors in [0, 1] (CPU or GPU alike).

Random transforms take a ``torch.Generator`` so callers control their randomness.
"""

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


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top:top + size, left:left + size]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None,
                 fill: float = 0.0) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (padding with ``fill``): the CIFAR-style crop."""
    if max_shift <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=fill)
    offsets = torch.randint(0, 2 * max_shift + 1, (batch, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets)])


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the images left–right."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    out = images.clone()
    out[flip.to(images.device)] = images[flip.to(images.device)].flip(-1)
    return out
