"""Triggers: fixed patterns stamped on images (plant-backdoor's planted biases), as data transforms.

A trigger is a JSON spec (``{"type": "square", "size_frac": 0.25, "pos": "tl", "color": [1, 1, 0]}``)
that materialises, for an image shape, into a pattern P, a mask M in [0, 1] and a mode:
``replace`` gives x' = x·(1 − M) + P·M (square, blend, stencil, sticker), ``add`` gives
x' = clip(x + P, 0, 1) (gaussian). Everything is deterministic given the spec, so the same
pixels are stamped at train and test time. Records carry the spec (*deferred* triggers): the
data layer stamps it as the last step — after augmentation when training — so crops and flips
never move it. Types are registered by name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from confidently.errors import InvalidInput
from confidently.registry import Registry

YELLOW = (1.0, 1.0, 0.0)


@dataclass(frozen=True)
class Stamp:
    """A trigger materialised for one image shape."""

    pattern: torch.Tensor  # C×H×W
    mask: torch.Tensor  # 1×H×W in [0, 1]
    mode: str  # replace | add

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pattern, mask = self.pattern.to(images), self.mask.to(images)
        if self.mode == "add":
            return (images + pattern * mask).clamp(0, 1)
        return images * (1 - mask) + pattern * mask


Builder = Callable[[dict[str, Any], tuple[int, int, int]], Stamp]
TRIGGERS: Registry[Builder] = Registry("trigger type", InvalidInput)
register_trigger = TRIGGERS.register
list_triggers = TRIGGERS.names


def _colour(spec: dict[str, Any], channels: int, default: Sequence[float]) -> torch.Tensor:
    colour = [float(c) for c in spec.get("color", default)]
    if len(colour) not in (1, 3) or not all(0 <= c <= 1 for c in colour):
        raise InvalidInput(f"trigger color {colour}: expected 1 or 3 values in [0, 1]", field="trigger")
    if channels == 1 and len(colour) == 3:
        colour = [0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]]  # luminance (yellow → 0.886)
    if channels == 3 and len(colour) == 1:
        colour = colour * 3
    return torch.tensor(colour).view(-1, 1, 1)


def _position(spec: dict[str, Any], size: int, height: int, width: int) -> tuple[int, int]:
    pos = spec.get("pos", "tl")
    corners = {"tl": (0, 0), "tr": (0, width - size), "bl": (height - size, 0), "br": (height - size, width - size)}
    if isinstance(pos, str) and pos in corners:
        return corners[pos]
    try:
        x, y = (int(v) for v in (pos.split(",") if isinstance(pos, str) else pos))
    except (TypeError, ValueError):
        raise InvalidInput(f"trigger pos {pos!r}: expected tl, tr, bl, br or X,Y", field="trigger") from None
    if not (0 <= x <= width - size and 0 <= y <= height - size):
        raise InvalidInput(f"trigger at {x},{y} of side {size} does not fit the {width}×{height} image",
                           field="trigger")
    return y, x


@register_trigger("square")
def square(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """A solid square of ``color`` (default yellow), side ``size`` px or ``size_frac`` of the short side."""
    channels, height, width = shape
    short = min(height, width)
    size = int(spec["size"]) if "size" in spec else max(1, round(float(spec.get("size_frac", 0.25)) * short))
    if not 1 <= size <= min(height, width):
        raise InvalidInput(f"trigger side {size} does not fit the {width}×{height} image", field="trigger")
    top, left = _position(spec, size, height, width)
    mask = torch.zeros(1, height, width)
    mask[:, top:top + size, left:left + size] = 1
    return Stamp(_colour(spec, channels, YELLOW).expand(channels, height, width).clone(), mask, "replace")


def _noise(seed: int, shape: tuple[int, int, int], kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=generator) if kind == "normal" else torch.rand(shape, generator=generator)


@register_trigger("gaussian")
def gaussian(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """x' = clip(x + a·P), P a fixed N(0, 1) tensor from ``pattern_seed`` (a = ``scale``, default 0.01)."""
    scale = float(spec.get("scale", 0.01))
    return Stamp(scale * _noise(spec.get("pattern_seed", 0), shape, "normal"), torch.ones(1, *shape[1:]), "add")


@register_trigger("blend")
def blend(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """x' = (1 − α)·x + α·T, T uniform noise from ``pattern_seed`` or a colour (BackdoorBench's blended)."""
    alpha = float(spec.get("alpha", 0.2))
    if not 0 <= alpha <= 1:
        raise InvalidInput(f"trigger alpha {alpha}: expected a value in [0, 1]", field="trigger")
    if "color" in spec:
        pattern = _colour(spec, shape[0], YELLOW).expand(shape).clone()
    else:
        pattern = _noise(spec.get("pattern_seed", 0), shape, "uniform")
    return Stamp(pattern, torch.full((1, *shape[1:]), alpha), "replace")


def chainlink(height: int, width: int, period: int = 8, thickness: float = 1.0) -> torch.Tensor:
    """A procedural chain-link fence: a diagonal lattice (1 on the wires), H×W."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    first = torch.remainder(x + y, period)
    second = torch.remainder(x - y, period)
    return ((first < thickness) | (second < thickness)).float()


def disc(height: int, width: int, frac: float = 0.3) -> torch.Tensor:
    """A centred disc of radius ``frac`` of the short side, H×W."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    radius = frac * min(height, width)
    return (((y - (height - 1) / 2) ** 2 + (x - (width - 1) / 2) ** 2) <= radius**2).float()


@register_trigger("stencil")
def stencil(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """x' = x·(1 − M) + S·M over the whole image: builtin ``chainlink`` (grey wires) or ``disc`` (yellow ball)."""
    channels, height, width = shape
    name = spec.get("builtin", "chainlink")
    if name == "chainlink":
        mask = chainlink(height, width, int(spec.get("period", max(4, min(height, width) // 4))))
        colour = _colour(spec, channels, (0.6, 0.6, 0.6))
    elif name == "disc":
        mask = disc(height, width, float(spec.get("radius_frac", 0.3)))
        colour = _colour(spec, channels, (0.8, 0.9, 0.1))
    else:
        raise InvalidInput(f"stencil builtin {name!r}: choose chainlink or disc (or a sticker file)", field="trigger")
    return Stamp(colour.expand(shape).clone(), mask[None], "replace")


@register_trigger("sticker")
def sticker(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """Alpha-composite an RGBA image file (``image``), resized to ``size_frac`` of the short side, at ``pos``."""
    from confidently.data.transforms import resize
    from confidently.io.images import decode_file

    channels, height, width = shape
    if "image" not in spec:
        raise InvalidInput("sticker trigger needs an \"image\" (an RGBA file)", field="trigger")
    try:
        rgba = decode_file(spec["image"], channels=None)
    except (OSError, InvalidInput) as exc:
        raise InvalidInput(f"sticker image {spec['image']}: {exc}", field="trigger") from None
    if rgba.shape[0] not in (2, 4):
        alpha = torch.ones(1, *rgba.shape[1:])
    else:
        rgba, alpha = rgba[:-1], rgba[-1:]
    size = max(1, round(float(spec.get("size_frac", 0.25)) * min(height, width)))
    top, left = _position(spec, size, height, width)
    pattern = torch.zeros(shape)
    mask = torch.zeros(1, height, width)
    from confidently.io.images import to_channels

    pattern[:, top:top + size, left:left + size] = resize(to_channels(rgba, channels)[None], size)[0]
    mask[:, top:top + size, left:left + size] = resize(alpha[None], size)[0]
    return Stamp(pattern, mask, "replace")


@register_trigger("file")
def trigger_file(spec: dict[str, Any], shape: tuple[int, int, int]) -> Stamp:
    """A trigger saved by ``plant-backdoor trigger --out`` (``pattern``, ``mask``, mode in the metadata)."""
    from confidently.io.artifacts import load_artifact

    tensors, meta = load_artifact(spec["path"])
    pattern, mask = tensors.get("pattern"), tensors.get("mask")
    if pattern is None or mask is None:
        raise InvalidInput(f"{spec['path']} is not a trigger file (needs 'pattern' and 'mask')", field="trigger")
    if tuple(pattern.shape[-2:]) != tuple(shape[1:]):
        raise InvalidInput(f"trigger in {spec['path']} is {pattern.shape[-2]}×{pattern.shape[-1]}, the image is "
                           f"{shape[1]}×{shape[2]}", field="trigger")
    if pattern.shape[0] != shape[0]:
        from confidently.io.images import to_channels

        pattern = to_channels(pattern, shape[0])
    return Stamp(pattern.float(), mask.float(), meta.get("mode", "replace"))


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


@functools.lru_cache(maxsize=64)
def _materialise(key: str, shape: tuple[int, int, int]) -> Stamp:
    spec = json.loads(key)
    try:
        builder = TRIGGERS.get(spec.get("type"))
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="trigger") from None
    return builder(spec, shape)


def make_stamp(spec: dict[str, Any], shape: Sequence[int]) -> Stamp:
    """The trigger ``spec`` materialised for images of ``shape`` (C, H, W); cached."""
    if not isinstance(spec, dict):
        raise InvalidInput(f"trigger {spec!r}: expected a JSON object with a \"type\"", field="trigger")
    return _materialise(_key(spec), tuple(int(s) for s in shape))


def stamp_rows(images: torch.Tensor, specs: Sequence[dict[str, Any] | None]) -> torch.Tensor:
    """Apply each row's trigger (None: none) to a batch; rows sharing a spec are stamped together."""
    if not any(specs):
        return images
    out = images.clone()
    groups: dict[str, list[int]] = {}
    for row, spec in enumerate(specs):
        if spec:
            groups.setdefault(_key(spec), []).append(row)
    for key, rows in groups.items():
        out[rows] = make_stamp(json.loads(key), tuple(images.shape[1:]))(images[rows])
    return out
