"""An engine-neutral description of one render, and the contract every render engine follows.

Controls (camera, orientation, texture, light...) never touch a renderer: they write fields of a fresh
``SceneState`` per render, and the engine draws that state. So "unapply" is free (the next render starts
from a new state), a control is one file whatever the engines, and an engine declares which fields it
honours so a config asking for something it cannot draw is refused before any rendering starts.

Units: the object is centred at the origin and normalised so its bounding sphere has radius 1; offsets
are in those radii. A 3DB ROOT's object (``ObjectSpec.blender_units``) keeps its Blender size and origin instead,
so offsets, heights and distances are Blender units, as 3DB places them; the camera still frames its bounding
sphere at zoom 1. Angles are radians. Images are float C×H×W in [0, 1], rows top→bottom.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from confidently.errors import UsageError


@dataclass(frozen=True)
class PointLight:
    """A point light ``distance`` from the object's centre along ``direction`` (3DB's experimental pointlight)."""

    color: tuple[float, float, float]
    energy: float  # watts, as Blender's light energy
    distance: float  # in the scene's units
    direction: tuple[float, float, float]


@dataclass(frozen=True)
class Occluder:
    """An object between camera and object: at ``zoom`` of the way from the object to the camera, shifted in the
    image plane from compass ``direction`` (index into OCCLUSION_DIRECTIONS) until it covers about ``ratio`` of
    the object's 2-D box; a mesh file, or a built-in shape."""

    ratio: float
    zoom: float
    scale: float
    direction: int
    path: Path | None = None
    builtin: str | None = None


# image-plane directions (x right, y up) the occluder comes from, 3DB's order
OCCLUSION_DIRECTIONS = ((1, -1), (1, 0), (1, 1), (0, -1), (0, 1), (-1, -1), (-1, 0), (-1, 1))


@dataclass
class SceneState:
    """Everything a pre-render control may set. Defaults give a frontal, slightly raised, fitted view."""

    view_point: tuple[float, float, float] = (0.0, -1.0, 0.3)  # direction from the object to the camera
    zoom: float = 1.0  # 1 = the bounding sphere just fits the frame with a margin; > 1 closer
    focal_length: float = 50.0  # mm on a 36 mm sensor: sets the field of view
    aperture: float | None = None  # f-stop focused on the object; None = no depth of field
    frame_shift: tuple[float, float] = (0.0, 0.0)  # where the object's centre projects, in [-1, 1] (x right, y up)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # Euler XYZ of the object
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # translation after rotation, in bounding radii
    aim: tuple[float, float, float] = (0.0, 0.0, 0.0)  # where the camera looks: the object's centre when it was placed
    scale: float = 1.0
    texture: torch.Tensor | None = None  # 3×s×s, unadv-patch's convention (row = floor(v·s)); None = original
    light: float = 1.0  # multiplier of the environment's light
    light_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ground: float | None = None  # lowest point of the placed object moved to this height (pin_to_ground)
    point_light: PointLight | None = None
    denoise: bool = False  # the renderer's denoiser on (Cycles: OpenImageDenoise)
    occluder: Occluder | None = None
    material: Path | None = None  # a .blend holding the one material every slot of the object takes
    liquid: tuple[float, float] | None = None  # (milk, coffee) ratios of the object's "liquid" material; water = rest
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific settings (e.g. a Blender material)

    def changed_fields(self) -> set[str]:
        """Fields that differ from the defaults: what an engine must be able to honour."""
        blank = SceneState()
        out = set()
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(blank, f.name)
            if f.name == "texture":
                if value is not None:
                    out.add(f.name)
            elif value != default:
                out.add(f.name)
        return out


@dataclass(frozen=True)
class ObjectSpec:
    """One object to render: a built-in procedural shape or a mesh file, and its ground-truth label."""

    id: str
    label: int | list[int]
    builtin: str | None = None
    path: Path | None = None
    color: tuple[float, float, float] = (0.8, 0.8, 0.8)
    blender_units: bool = False  # a 3DB ROOT's model: keep its size and origin, do not fit it to the unit sphere

    def __post_init__(self):
        if (self.builtin is None) == (self.path is None):
            raise UsageError(f"object {self.id!r}: give exactly one of builtin: NAME or path: FILE")


@dataclass(frozen=True)
class EnvironmentSpec:
    """Where the object sits: a solid colour, a procedural backdrop, or an image/HDRI file."""

    id: str
    solid: tuple[float, float, float] | None = None
    procedural: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class RenderArgs:
    resolution: int = 64
    samples: int = 8
    threads: int = 1
    with_uv: bool = False
    with_depth: bool = False
    with_segmentation: bool = True
    max_depth: float = 10.0


class Engine(ABC):
    """A renderer. ``fields`` lists the SceneState fields it honours (besides the camera defaults)."""

    name: str
    fields: frozenset[str]

    @abstractmethod
    def load(self, obj: ObjectSpec, environment: EnvironmentSpec, args: RenderArgs) -> None:
        """Set up the (object, environment) pair; called again only when the pair changes."""

    @abstractmethod
    def render(self, state: SceneState, seed: int) -> dict[str, torch.Tensor]:
        """``rgb`` 3×H×W and ``alpha`` 1×H×W in [0, 1]; ``segmentation`` 1×H×W int32 (−1 background, the
        object's label elsewhere) when asked; ``uv`` 2×H×W and ``depth`` 1×H×W (÷ max_depth) when asked."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Name, version and settings, for records."""

