"""Pixels in and out: centre-crop + resize (like PIL's ``ImageOps.fit``), and 8-bit saving that keeps the bound.

An immunized image is only as good as the file it is written to: rounding to 8 bits can push a
pixel 0.5/255 past ε, and lossy formats (JPEG, WebP) erase much of the perturbation. So the PNG
is quantised, then re-projected onto the ε-ball around the *quantised* original, and lossy
suffixes are refused unless the caller allows them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from confidently.errors import UsageError
from confidently.io.images import save_image

LOSSLESS = (".png",)
LOSSY = (".jpg", ".jpeg", ".webp")


def fit_image(image: torch.Tensor, size: int | tuple[int, int], *, nearest: bool = False) -> torch.Tensor:
    """Centre-crop C×H×W to the target aspect ratio, then resize (bicubic, antialiased; nearest for masks).

    An image already at the target size comes back unchanged (never resample an immunized image).
    """
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    target_ratio = width / height
    if w / h > target_ratio:  # too wide: crop columns
        crop_w, crop_h = max(1, round(h * target_ratio)), h
    else:
        crop_w, crop_h = w, max(1, round(w / target_ratio))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    cropped = image[..., top:top + crop_h, left:left + crop_w]
    batch = cropped.unsqueeze(0).float()
    if nearest:
        out = F.interpolate(batch, size=(height, width), mode="nearest")
    else:
        out = F.interpolate(batch, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def quantize_within_bound(x_adv: torch.Tensor, x: torch.Tensor, eps: float, keep: torch.Tensor | None = None,
                          norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 original, uint8 immunized) with |adv − orig| ≤ ⌊255ε⌋ per pixel (ℓ∞) and adv = orig outside ``keep``.

    For ℓ2 the rounded perturbation is scaled back into the ball around the quantised original if needed.
    """
    q_x = to_uint8(x).to(torch.int16)
    q_adv = to_uint8(x_adv).to(torch.int16)
    if norm == "linf":
        bound = math.floor(255 * eps + 1e-6)
        q_adv = torch.minimum(torch.maximum(q_adv, q_x - bound), q_x + bound)
    else:
        delta = (q_adv - q_x).float()
        length = float(delta.norm())
        if length > 255 * eps:
            delta = torch.trunc(delta * (255 * eps / length))  # toward 0: stays inside the ball
        q_adv = q_x + delta.to(torch.int16)
    q_adv = q_adv.clamp(0, 255)
    if keep is not None:
        keep = keep.detach().cpu().expand_as(q_adv) > 0.5
        q_adv = torch.where(keep, q_adv, q_x)
    return q_x.to(torch.uint8), q_adv.to(torch.uint8)


def check_output_format(path: str | Path, allow_lossy: bool) -> None:
    suffix = Path(path).suffix.lower()
    if suffix in LOSSLESS:
        return
    if suffix in LOSSY:
        if allow_lossy:
            return
        raise UsageError(f"{path}: {suffix} is lossy and erases much of the perturbation; write PNG "
                         f"(or pass --allow-lossy to accept that)")
    raise UsageError(f"{path}: unsupported image format {suffix!r}; use .png")


def save_uint8(image: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 C×H×W tensor in the format of the suffix: PNG holds these values exactly, JPEG/WebP do not."""
    save_image(image.float() / 255.0, path)
