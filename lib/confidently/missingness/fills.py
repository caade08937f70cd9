"""Missingness approximations ("fills"): what a removed region is replaced with.

Fills act on un-normalised images in [0, 1] (black is 0 *before* the model normalises), as
x' = v ⊙ x + (1 − v) ⊙ r. ``drop`` invents no pixels at all: the ViT drops the tokens of
removed regions (see :class:`~confidently.missingness.model.MissingnessModel`). Randomised
fills draw from one seed per row, so a perturbation's pixels never depend on batching.
Fills are registered by name; ``color:R,G,B`` is parsed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torchvision.transforms.functional as TF

from confidently.errors import UsageError


@dataclass(frozen=True)
class Fill:
    """A fill: ``replace(images, seeds) -> r`` gives the replacement pixels for each row.

    ``true_removal`` is False for fills that leak the removed content (blur); ``drops_tokens``
    marks ``drop``; ``random`` fills need a seed per row.
    """

    name: str
    replace: Callable[[torch.Tensor, Sequence[int] | None], torch.Tensor] | None
    true_removal: bool = True
    drops_tokens: bool = False
    random: bool = False
    color: tuple[float, ...] | None = field(default=None)

    def __call__(self, images: torch.Tensor, visible: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images with the invisible pixels replaced (B×C×H×W, visible B×H×W)."""
        if self.drops_tokens and self.replace is None:
            return images
        if self.random and (seeds is None or len(seeds) != len(images)):
            raise ValueError(f"fill {self.name!r} is random: pass one seed per image")
        return torch.where(visible[:, None].to(images.device).bool(), images, self.replace(images, seeds))


def _constant(color: Sequence[float]) -> Callable[[torch.Tensor, Sequence[int] | None], torch.Tensor]:
    def replace(images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        value = torch.tensor(color, dtype=images.dtype, device=images.device)
        if len(value) == 1 or images.shape[1] == 1:
            value = value.mean().reshape(1)
        return value.view(1, -1, 1, 1).expand(images.shape)

    return replace


def _per_row(draw: Callable[[torch.Generator, tuple[int, ...]], torch.Tensor]):
    def replace(images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        rows = [draw(torch.Generator().manual_seed(int(seed)), tuple(images.shape[1:])) for seed in seeds]
        return torch.stack(rows).to(images.device, images.dtype)

    return replace


def _random_color(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape[0], 1, 1, generator=generator).expand(shape)


def _random_noise(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _blur(images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
    return TF.gaussian_blur(images, kernel_size=[21, 21], sigma=[10.0, 10.0])


FILL_NAMES = ("black", "mean", "color:R,G,B", "random-color", "random-noise", "blur", "drop")
BINARY8 = tuple((r, g, b) for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0))


def make_fill(spec: str, mean: Sequence[float] = (0.485, 0.456, 0.406)) -> Fill:
    """The fill named ``spec``; ``mean`` is the dataset mean colour (the model's normalisation mean)."""
    if spec == "black":
        return Fill("black", _constant((0.0,)), color=(0.0,))
    if spec == "mean":
        return Fill("mean", _constant(tuple(mean)), color=tuple(mean))
    if spec.startswith("color:"):
        try:
            color = tuple(float(v) for v in spec.removeprefix("color:").split(","))
        except ValueError:
            color = ()
        if len(color) not in (1, 3) or not all(0.0 <= c <= 1.0 for c in color):
            raise UsageError(f"--fill {spec!r}: expected color:R,G,B with values in [0, 1], e.g. color:0.5,0.5,0.5")
        return Fill(spec, _constant(color), color=color)
    if spec == "random-color":
        return Fill(spec, _per_row(_random_color), random=True)
    if spec == "random-noise":
        return Fill(spec, _per_row(_random_noise), random=True)
    if spec == "blur":
        return Fill(spec, _blur, true_removal=False)
    if spec == "drop":
        return Fill(spec, None, drops_tokens=True)
    raise UsageError(f"unknown fill {spec!r}; choose {', '.join(FILL_NAMES)}")


def drop_over(fill: Fill) -> Fill:
    """Token dropping with the removed pixels painted by ``fill`` first: whatever of the paint
    the kept tokens still show reaches the model, so explanations that differ by paint measure the leak."""
    if fill.drops_tokens:
        raise UsageError("--colors: give pixel fills to paint under drop, not drop itself")
    return dataclasses.replace(fill, name=f"drop/{fill.name}", drops_tokens=True)


def color_fills(spec: str) -> list[Fill]:
    """``binary8`` (the 8 colours with R, G, B in {0, 1}) or a ``;``-separated list of fills."""
    if spec == "binary8":
        return [make_fill("color:" + ",".join(f"{c:g}" for c in color)) for color in BINARY8]
    fills = [make_fill(part.strip()) for part in spec.split(";") if part.strip()]
    if len(fills) < 2:
        raise UsageError(f"--colors {spec!r}: give binary8 or at least two fills separated by ';'")
    return fills
