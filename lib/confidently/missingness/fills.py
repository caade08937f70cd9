"""Missingness approximations ("fills"): what a removed region is replaced with.

Fills act on un-normalised images in [0, 1] (black is 0 *before* the model normalises), as
x' = v ⊙ x + (1 − v) ⊙ r. ``drop`` invents no pixels at all: the ViT drops the tokens of
removed regions (see :class:`~confidently.missingness.model.MissingnessModel`). Randomised
fills draw from one seed per row, so a perturbation's pixels never depend on batching.
Fills are registered by name; ``color:R,G,B`` is parsed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF

from confidently.errors import UsageError
from confidently.registry import Registry


class Fill(ABC):
    """A fill: :meth:`replace` gives the replacement pixels of each row, :meth:`__call__` puts them where the
    pixels are not visible.

    ``true_removal`` is False for fills that leak the removed content (blur); ``drops_tokens`` marks
    ``drop``; ``paints`` is False for a drop that leaves the pixels as they are; ``random`` fills need one
    seed per row; ``color`` is a constant fill's colour.
    """

    true_removal: bool = True
    drops_tokens: bool = False
    paints: bool = True
    random: bool = False
    color: tuple[float, ...] | None = None

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def replace(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Replacement pixels shaped like ``images`` (B×C×H×W)."""

    def __call__(self, images: torch.Tensor, visible: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Images with the invisible pixels replaced (B×C×H×W, visible B×H×W)."""
        if self.random and (seeds is None or len(seeds) != len(images)):
            raise ValueError(f"fill {self.name!r} is random: pass one seed per image")
        return torch.where(visible[:, None].to(images.device).bool(), images, self.replace(images, seeds))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ConstantFill(Fill):
    """One colour everywhere (black, the dataset mean, color:R,G,B); one value is grey on any channels."""

    def __init__(self, name: str, color: Sequence[float]):
        super().__init__(name)
        self.color = tuple(color)

    def replace(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        value = torch.tensor(self.color, dtype=images.dtype, device=images.device)
        if len(value) == 1 or images.shape[1] == 1:
            value = value.mean().reshape(1)
        return value.view(1, -1, 1, 1).expand(images.shape)


class RandomFill(Fill):
    """Pixels drawn per row from that row's seed, so they never depend on batching."""

    random = True

    def __init__(self, name: str, draw: Callable[[torch.Generator, tuple[int, ...]], torch.Tensor]):
        super().__init__(name)
        self.draw = draw

    def replace(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        rows = [self.draw(torch.Generator().manual_seed(int(seed)), tuple(images.shape[1:])) for seed in seeds]
        return torch.stack(rows).to(images.device, images.dtype)


class BlurFill(Fill):
    """A strong Gaussian blur of the image itself: it leaks the removed content (not a true removal)."""

    true_removal = False

    def replace(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        return TF.gaussian_blur(images, kernel_size=[21, 21], sigma=[10.0, 10.0])


class DropFill(Fill):
    """The ViT drops the tokens of removed regions; pixels are left as they are, or painted by ``paint``
    first (whatever of the paint the kept tokens still show reaches the model)."""

    drops_tokens = True

    def __init__(self, name: str, paint: Fill | None = None):
        super().__init__(name)
        self.paint = paint
        self.paints = paint is not None
        self.random = bool(paint and paint.random)
        self.color = paint.color if paint else None

    def replace(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        return images if self.paint is None else self.paint.replace(images, seeds)

    def __call__(self, images: torch.Tensor, visible: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        return images if self.paint is None else super().__call__(images, visible, seeds)


def _random_color(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape[0], 1, 1, generator=generator).expand(shape)


def _random_noise(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def _parse_color(spec: str, text: str) -> tuple[float, ...]:
    try:
        color = tuple(float(v) for v in text.split(","))
    except ValueError:
        color = ()
    if len(color) not in (1, 3) or not all(0.0 <= c <= 1.0 for c in color):
        raise UsageError(f"--fill {spec!r}: expected color:R,G,B with values in [0, 1], e.g. color:0.5,0.5,0.5")
    return color


# A fill factory takes (spec, the text after "name:", the dataset mean colour).
FILLS: Registry[Callable[[str, str, Sequence[float]], Fill]] = Registry("fill")
FILLS.register("black")(lambda spec, arg, mean: ConstantFill("black", (0.0,)))
FILLS.register("mean")(lambda spec, arg, mean: ConstantFill("mean", tuple(mean)))
FILLS.register("color")(lambda spec, arg, mean: ConstantFill(spec, _parse_color(spec, arg)))
FILLS.register("random-color")(lambda spec, arg, mean: RandomFill(spec, _random_color))
FILLS.register("random-noise")(lambda spec, arg, mean: RandomFill(spec, _random_noise))
FILLS.register("blur")(lambda spec, arg, mean: BlurFill(spec))
FILLS.register("drop")(lambda spec, arg, mean: DropFill(spec))

FILL_NAMES = ("black", "mean", "color:R,G,B", "random-color", "random-noise", "blur", "drop")
BINARY8 = tuple((r, g, b) for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0))


def make_fill(spec: str, mean: Sequence[float] = (0.485, 0.456, 0.406)) -> Fill:
    """The fill named ``spec`` (``name`` or ``name:argument``, from :data:`FILLS`); ``mean`` is the dataset
    mean colour (the model's normalisation mean)."""
    name, _, arg = spec.partition(":")
    if name not in FILLS or (name == "color") != bool(_):
        raise UsageError(f"unknown fill {spec!r}; choose {', '.join(FILL_NAMES)}")
    return FILLS.get(name)(spec, arg, mean)


def drop_over(fill: Fill) -> Fill:
    """Token dropping with the removed pixels painted by ``fill`` first: whatever of the paint
    the kept tokens still show reaches the model, so explanations that differ by paint measure the leak."""
    if fill.drops_tokens:
        raise UsageError("--colors: give pixel fills to paint under drop, not drop itself")
    return DropFill(f"drop/{fill.name}", paint=fill)


def color_fills(spec: str) -> list[Fill]:
    """``binary8`` (the 8 colours with R, G, B in {0, 1}) or a ``;``-separated list of fills."""
    if spec == "binary8":
        return [make_fill("color:" + ",".join(f"{c:g}" for c in color)) for color in BINARY8]
    fills = [make_fill(part.strip()) for part in spec.split(";") if part.strip()]
    if len(fills) < 2:
        raise UsageError(f"--colors {spec!r}: give binary8 or at least two fills separated by ';'")
    return fills
