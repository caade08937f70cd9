"""Where the camera stands: viewpoints on a sphere around an object, in units of its bounding radius.

Renderer-agnostic, so a texture optimised with one renderer can be evaluated from the same seeded
viewpoints with another. The thesis's distribution: direction uniform on the sphere, distance uniform
in a zoom range, looking at the object's centre with +z up, then a random 2-D shift of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from confidently.errors import UsageError


@dataclass(frozen=True)
class View:
    direction: tuple[float, float, float]  # unit vector from the object's centre to the camera
    distance: float  # in bounding radii
    light: float  # constant-environment radiance
    shift: tuple[float, float]  # frame translation, fractions of width and height

    def as_dict(self) -> dict:
        return {"direction": [round(v, 6) for v in self.direction], "distance": round(self.distance, 6),
                "light": round(self.light, 6), "shift": [round(v, 6) for v in self.shift]}


@dataclass(frozen=True)
class ViewSampler:
    zoom: tuple[float, float] = (2.5, 5.0)
    light: tuple[float, float] = (0.7, 0.7)
    translate: float = 0.0
    hemisphere: bool = False

    def __post_init__(self):
        if not 0 < self.zoom[0] <= self.zoom[1]:
            raise UsageError(f"--zoom-min/--zoom-max {self.zoom}: need 0 < min <= max")
        if self.zoom[0] <= 1:
            raise UsageError(f"--zoom-min {self.zoom[0]}: the camera would sit inside the object (radius 1)")
        if not 0 <= self.light[0] <= self.light[1]:
            raise UsageError(f"--light-min/--light-max {self.light}: need 0 <= min <= max")
        if not 0 <= self.translate < 1:
            raise UsageError(f"--translate {self.translate}: expected a fraction in [0, 1)")

    def sample(self, count: int, generator: torch.Generator) -> list[View]:
        uniform = torch.rand(count, 6, generator=generator, dtype=torch.float64)
        views = []
        for u in uniform.tolist():
            z = u[0] if self.hemisphere else 2 * u[0] - 1  # uniform z gives a uniform direction on the sphere
            phi = 2 * math.pi * u[1]
            ring = math.sqrt(max(0.0, 1 - z * z))
            views.append(View(direction=(ring * math.cos(phi), ring * math.sin(phi), z),
                              distance=self.zoom[0] + u[2] * (self.zoom[1] - self.zoom[0]),
                              light=self.light[0] + u[3] * (self.light[1] - self.light[0]),
                              shift=((2 * u[4] - 1) * self.translate, (2 * u[5] - 1) * self.translate)))
        return views


def shift_frame(image: torch.Tensor, shift: tuple[float, float]) -> torch.Tensor:
    """Translate a C×H×W frame by whole pixels, filling with zeros (alpha 0 = background shows through)."""
    _, height, width = image.shape
    dx, dy = round(shift[0] * width), round(shift[1] * height)
    if dx == 0 and dy == 0:
        return image
    out = torch.zeros_like(image)
    out[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        image[:, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return out
