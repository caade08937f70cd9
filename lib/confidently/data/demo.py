"""Datasets that ship with the package and need no network: ``demo:digits``, ``demo:shapes``,
``demo:photos``. Options go after a ``?``: ``demo:shapes?classes=6&size=64&seed=1``.

Each is deterministic by its seed and cached per process.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F

from confidently.errors import InvalidInput
from confidently.registry import Registry


@dataclass(frozen=True)
class DemoData:
    """A demo set in memory: uint8 N×C×H×W images, labels (-1 = none), splits, ids, classes."""

    images: torch.Tensor
    labels: list[int]
    splits: list[str]
    ids: list[str]
    classes: list[str] | None


DEMOS: Registry[Callable[..., DemoData]] = Registry("demo dataset", InvalidInput)
register_demo = DEMOS.register
list_demos = DEMOS.names


def parse_demo(spec: str) -> tuple[str, dict[str, Any]]:
    """``demo:NAME?k=v&...`` → (NAME, typed options), checked against the generator's signature."""
    body = spec.removeprefix("demo:")
    name, _, query = body.partition("?")
    params = inspect.signature(DEMOS.get(name)).parameters
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in params:
            raise InvalidInput(f"demo:{name} has no option {key!r}; options: {', '.join(params)}")
        kind = type(params[key].default)
        try:
            options[key] = kind(value)
        except ValueError:
            raise InvalidInput(f"demo:{name} option {key}={value!r}: expected {kind.__name__}") from None
    return name, options


@functools.lru_cache(maxsize=16)
def _build(name: str, options: tuple[tuple[str, Any], ...]) -> DemoData:
    return DEMOS.get(name)(**dict(options))


def load_demo(spec: str) -> DemoData:
    name, options = parse_demo(spec)
    return _build(name, tuple(sorted(options.items())))


def _seeded_split(labels: np.ndarray, test_fraction: float, seed: int) -> list[str]:
    """A stratified train/test split that depends only on the labels and the seed."""
    splits = np.array(["train"] * len(labels), dtype=object)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        splits[members[: int(round(len(members) * test_fraction))]] = "test"
    return splits.tolist()


def _canvas(digits: torch.Tensor, seed: int, canvas: int = 40, glyph: int = 20) -> torch.Tensor:
    """Tinted glyphs pasted (pixel-wise max) at a random spot in the left half of a noise canvas."""
    generator = torch.Generator().manual_seed(seed)
    count = len(digits)
    glyphs = F.interpolate(digits, size=(glyph, glyph), mode="bilinear", align_corners=False).clamp(0, 1)
    tint = 0.6 + 0.4 * torch.rand(count, 3, 1, 1, generator=generator)
    out = 0.35 * torch.rand(count, 3, canvas, canvas, generator=generator)
    tops = torch.randint(0, canvas - glyph + 1, (count,), generator=generator)
    lefts = torch.randint(0, canvas // 2 - glyph // 2 + 1, (count,), generator=generator)
    for i in range(count):
        region = out[i, :, tops[i]:tops[i] + glyph, lefts[i]:lefts[i] + glyph]
        out[i, :, tops[i]:tops[i] + glyph, lefts[i]:lefts[i] + glyph] = torch.maximum(region, glyphs[i] * tint[i])
    return out


@register_demo("digits")
def digits(size: int = 32, seed: int = 0, test_fraction: float = 0.2, background: str = "black") -> DemoData:
    """scikit-learn's 1,797 bundled 8×8 handwritten digits, upsampled to size×size RGB (1437/360).

    ``background=noisy`` puts the strokes on grey noise (0.5 + N(0, 0.1²), strokes +0.5): black
    is then out of distribution, as it is for natural images (the missingness experiments).
    ``background=canvas`` pastes a tinted 20×20 digit in the left half of a 40×40 noise canvas, leaving
    the right half free for a sticker (the unadversarial-patch experiments; ``size`` is ignored).
    """
    from sklearn.datasets import load_digits

    if background not in ("black", "noisy", "canvas"):
        raise InvalidInput(f"demo:digits background={background!r}: choose black, noisy or canvas")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1)
    if background == "canvas":
        images = _canvas(images, seed)
    else:
        images = F.interpolate(images, size=(size, size), mode="nearest" if size % 8 == 0 else "bilinear")
    if background == "noisy":
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * 0.1
        images = 0.5 + noise + 0.5 * images
    images = images.clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = bunch.target.astype(int)
    return DemoData(images, labels.tolist(), _seeded_split(labels, test_fraction, seed),
                    [f"digits-{i:04d}" for i in range(len(labels))], [str(d) for d in range(10)])


SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "crescent")
COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.8, 0.2), "blue": (0.2, 0.3, 0.95),
           "yellow": (0.95, 0.85, 0.1), "magenta": (0.85, 0.2, 0.85), "cyan": (0.1, 0.85, 0.9)}


def shape_classes(count: int) -> list[tuple[str, str]]:
    """The first ``count`` (colour, shape) classes; both attributes vary from one class to the next."""
    colours = list(COLOURS)
    limit = len(SHAPES) * len(colours)
    if not 1 <= count <= limit:
        raise InvalidInput(f"demo:shapes has between 1 and {limit} classes, not {count}")
    pairs = []
    for i in range(count):
        shape, cycle = i % len(SHAPES), i // len(SHAPES)
        pairs.append((colours[(shape + cycle) % len(colours)], SHAPES[shape]))
    return pairs


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-sized shape in its own coordinates (v points up)."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if shape == "circle":
        return r <= 1.0
    if shape == "square":
        return np.maximum(abs(u), abs(v)) <= 0.85
    if shape == "triangle":
        return (v >= -0.8) & (v <= 1.0 - 1.8 * abs(u))
    if shape == "cross":
        return ((abs(u) <= 0.3) & (abs(v) <= 1.0)) | ((abs(v) <= 0.3) & (abs(u) <= 1.0))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "diamond":
        return abs(u) + abs(v) <= 1.0
    if shape == "star":
        return r <= 0.55 + 0.45 * np.cos(5 * (theta - np.pi / 2))
    if shape == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.45, v) > 0.75)
    raise ValueError(shape)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-contrast texture: smooth noise, stripes or a checkerboard in random muted colours."""
    base = rng.uniform(0.25, 0.65, size=3)
    other = np.clip(base + rng.uniform(-0.2, 0.2, size=3), 0, 1)
    y, x = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(3)
    if kind == 0:
        coarse = rng.uniform(0, 1, size=(1, 1, 5, 5)).astype(np.float32)
        pattern = F.interpolate(torch.from_numpy(coarse), size=(size, size), mode="bicubic",
                                align_corners=False)[0, 0].clamp(0, 1).numpy()
    elif kind == 1:
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 8)
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)))
    else:
        cells = rng.integers(3, 8)
        pattern = ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float)
    image = base[:, None, None] * (1 - pattern) + other[:, None, None] * pattern
    return np.clip(image + rng.normal(0, 0.03, size=image.shape), 0, 1)


def render_shape(rng: np.random.Generator, colour: str, shape: str, size: int, supersample: int = 2) -> np.ndarray:
    """One 3×size×size image of ``shape`` in ``colour`` on a random textured background."""
    image = _background(rng, size)
    scale = rng.uniform(0.22, 0.36) * size
    centre = rng.uniform(scale + 1, size - scale - 1, size=2)
    angle = np.deg2rad(rng.uniform(-20, 20))
    fine = size * supersample
    y, x = (np.mgrid[0:fine, 0:fine] + 0.5) / supersample
    dx, dy = x - centre[0], y - centre[1]
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / scale
    v = -(-np.sin(angle) * dx + np.cos(angle) * dy) / scale
    mask = _shape_mask(shape, u, v).astype(np.float32)
    coverage = mask.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    colour_rgb = np.clip(np.array(COLOURS[colour]) * rng.uniform(0.85, 1.1) + rng.normal(0, 0.03, 3), 0, 1)
    return image * (1 - coverage) + colour_rgb[:, None, None] * coverage


@register_demo("shapes")
def shapes(classes: int = 10, size: int = 32, per_class: int = 200, seed: int = 0,
           test_fraction: float = 0.2) -> DemoData:
    """Procedural coloured shapes on textured backgrounds; class = (colour, shape).

    Image i depends only on (seed, i), so any subset of classes or sizes is reproducible.
    With 10+ classes it splits into a source task and a different target task.
    """
    pairs = shape_classes(classes)
    total = classes * per_class
    images = np.empty((total, 3, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    for i in range(total):
        rng = np.random.default_rng([seed, i])
        colour, shape = pairs[labels[i]]
        images[i] = np.round(render_shape(rng, colour, shape, size) * 255).astype(np.uint8)
    return DemoData(torch.from_numpy(images), labels.tolist(), _seeded_split(labels, test_fraction, seed),
                    [f"shapes-{i:05d}" for i in range(total)], [f"{c} {s}" for c, s in pairs])


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "camera",
          "hubble_deep_field", "colorwheel")


@register_demo("photos")
def photos(size: int = 256) -> DemoData:
    """Real photographs bundled in the scikit-image and scikit-learn wheels, centre-cropped to size×size."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    arrays = {name: getattr(skdata, name)() for name in PHOTOS}
    for filename, array in zip(("china", "flower"), load_sample_images().images, strict=True):
        arrays[filename] = array
    tensors, ids = [], []
    for name, array in arrays.items():
        image = torch.from_numpy(np.array(array))
        image = image.unsqueeze(0).expand(3, -1, -1) if image.ndim == 2 else image[..., :3].permute(2, 0, 1)
        side = min(image.shape[1:])
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        square = image[:, top:top + side, left:left + side].float().unsqueeze(0)
        resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        tensors.append(resized[0].clamp(0, 255).round().to(torch.uint8))
        ids.append(f"photo-{name}")
    return DemoData(torch.stack(tensors), [-1] * len(ids), ["test"] * len(ids), ids, None)
