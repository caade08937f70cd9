"""Everyday transformations of an immunized photo, for the robustness report (spec §7).

Does the protection survive what happens to a photo on its way to an editor? ``immunize edit
--transform jpeg:75`` applies a transform to the *immunized* image before editing it and writes
the edit under ``transform_field("edit_immunized", "jpeg:75")`` (``edit_immunized_jpeg_75``);
``immunize score --transforms jpeg:75`` then compares that edit with the edit of the clean photo.

A transform is written ``name:value`` and registered by name (a new one is one decorated function):

- ``jpeg:Q``   — 8-bit JPEG encode/decode at quality Q (1–100);
- ``resize:S`` — downscale by S (0 < S < 1, antialiased bilinear) and back to the original size,
  so the shape is kept and the editor and the metrics see the same size as before;
- ``blur:S``   — Gaussian blur with standard deviation S pixels (reflect padding);
- ``crop:F``   — keep the centre F of each side (0 < F < 1) and resize it back to the original size;
- ``rotate:D`` — rotate by D degrees about the centre (bilinear, the corners filled by reflection), same size.

``immunize edit --transform`` applies each transform to the clean photo too (``edit_clean_jpeg_75``): the
control ``score`` compares against, so what a transform alone does to an edit is never counted as protection.

Every transform takes float N×C×H×W (or C×H×W) in [0, 1] and returns the same shape, dtype and
device, in [0, 1]. Transforms are deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from confidently.errors import UsageError
from confidently.registry import Registry

TransformFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class TransformKind:
    """One registered transform: ``apply(images, value)`` and the values it accepts."""

    name: str
    apply: TransformFn
    check: Callable[[float], str | None]  # None when the value is fine, else what was expected
    help: str


TRANSFORMS: Registry[TransformKind] = Registry("transform")


def register_transform(name: str, help: str, check: Callable[[float], str | None]):
    """Register ``fn(images N×C×H×W, value) -> images`` as transform ``name``."""

    def wrap(fn: TransformFn) -> TransformFn:
        TRANSFORMS.register(name)(TransformKind(name, fn, check, help))
        return fn

    return wrap


def list_transforms() -> list[str]:
    return TRANSFORMS.names()


@dataclass(frozen=True)
class Transform:
    """A parsed ``name:value``; ``spec`` is its canonical text (``jpeg:75``, ``resize:0.5``)."""

    name: str
    value: float

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.value:g}"

    @property
    def slug(self) -> str:
        """The spec as an identifier: ``jpeg_75``, ``resize_0p5``, ``blur_1p5`` (jq-friendly field names)."""
        return f"{self.name}_{self.value:g}".replace(".", "p").replace("-", "m").replace("+", "")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return apply_transform(images, self)

    def __str__(self) -> str:
        return self.spec


def parse_transform(spec: str | Transform) -> Transform:
    """``"jpeg:75"`` → ``Transform("jpeg", 75.0)``; an unknown name or bad value is a :class:`UsageError`."""
    if isinstance(spec, Transform):
        return spec
    text = str(spec).strip()
    name, sep, raw = text.partition(":")
    name = name.strip()
    kind = TRANSFORMS.get(name)  # unknown names fail here, listing the known ones
    if not sep or not raw.strip():
        raise UsageError(f"transform {text!r}: expected {name}:VALUE ({kind.help})")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"transform {text!r}: {raw!r} is not a number ({kind.help})") from None
    problem = None if math.isfinite(value) else "a finite number"
    problem = problem or kind.check(value)
    if problem:
        raise UsageError(f"transform {text!r}: expected {problem} ({kind.help})")
    return Transform(name, value)


def parse_transforms(text: str | list[str] | None) -> list[Transform]:
    """A comma-separated list (``"jpeg:75,resize:0.5"``) or a list of specs; duplicates are dropped."""
    if not text:
        return []
    items = [p for part in ([text] if isinstance(text, str) else text) for p in re.split(r"[,\s]+", part)]
    out: list[Transform] = []
    for item in items:
        if item.strip():
            transform = parse_transform(item)
            if transform not in out:
                out.append(transform)
    return out


def transform_field(field: str, spec: str | Transform) -> str:
    """The record field holding ``field`` after ``spec``: ``transform_field("edit_immunized", "jpeg:75")``
    is ``"edit_immunized_jpeg_75"``."""
    return f"{field}_{parse_transform(spec).slug}"


def apply_transform(images: torch.Tensor, spec: str | Transform) -> torch.Tensor:
    """Apply ``spec`` (``"jpeg:75"`` or a :class:`Transform`) to float N×C×H×W or C×H×W images in [0, 1]."""
    transform = parse_transform(spec)
    if images.ndim not in (3, 4):
        raise ValueError(f"expected C×H×W or N×C×H×W images, got shape {list(images.shape)}")
    squeeze = images.ndim == 3
    batch = images.unsqueeze(0) if squeeze else images
    out = TRANSFORMS.get(transform.name).apply(batch, transform.value).clamp(0, 1).to(images.dtype)
    return out[0] if squeeze else out


@register_transform("jpeg", "jpeg:Q, JPEG quality Q from 1 to 100",
                    lambda q: None if 1 <= q <= 100 and q == int(q) else "an integer quality from 1 to 100")
def jpeg(images: torch.Tensor, quality: float) -> torch.Tensor:
    from confidently.data.corruptions import jpeg_roundtrip

    return jpeg_roundtrip(images, int(quality))


@register_transform("resize", "resize:S, downscale by 0 < S < 1 and back to the original size",
                    lambda s: None if 0 < s < 1 else "a scale factor 0 < S < 1")
def resize_round_trip(images: torch.Tensor, scale: float) -> torch.Tensor:
    from confidently.data.transforms import resize

    height, width = images.shape[-2:]
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    return resize(resize(images, small), (height, width))


@register_transform("blur", "blur:S, Gaussian blur of standard deviation S > 0 pixels",
                    lambda s: None if 0 < s <= 64 else "a standard deviation 0 < S <= 64 (pixels)")
def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from confidently.data.corruptions import gaussian_blur_sigma

    return gaussian_blur_sigma(images, sigma)


@register_transform("crop", "crop:F, keep the centre F of each side (0 < F < 1), resized back to the original size",
                    lambda f: None if 0 < f < 1 else "a fraction 0 < F < 1 of each side")
def centre_crop(images: torch.Tensor, fraction: float) -> torch.Tensor:
    from confidently.data.transforms import resize

    height, width = images.shape[-2:]
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - h) // 2, (width - w) // 2
    return resize(images[..., top:top + h, left:left + w], (height, width))


@register_transform("rotate", "rotate:D, rotate by D degrees about the centre (-180 < D < 180, not 0)",
                    lambda d: None if -180 < d < 180 and d != 0 else "an angle in degrees, -180 < D < 180, not 0")
def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    import torch.nn.functional as F

    angle = math.radians(degrees)
    height, width = images.shape[-2:]
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid works in normalised coordinates: correct for the aspect ratio so the rotation is rigid
    theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
                         dtype=torch.float32, device=images.device)
    grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
