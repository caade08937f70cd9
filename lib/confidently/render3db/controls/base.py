"""The control base classes and their registry (a leaf module: each control file imports it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from confidently.errors import UsageError
from confidently.registry import Registry
from confidently.render.scene import SceneState


@dataclass(frozen=True)
class Continuous:
    """A real parameter: ``default`` is a range (lo, hi) searched when the config is silent, or a fixed value."""

    default: tuple[float, float] | float | None
    low: float | None = None  # domain, inclusive unless ``open_low``
    high: float | None = None
    open_low: bool = False
    nullable: bool = False  # ``null`` is a legal fixed value (e.g. aperture: no depth of field)
    doc: str = ""
    field: str | None = None  # the SceneState field it writes (pre-render controls), for engine checks
    threedb: tuple[float, float] | float | None = None  # 3DB's default where it differs (3DB-form configs use it)
    kind: ClassVar[str] = "continuous"

    def check(self, value: float, where: str) -> float:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"{where}: expected a finite number, got {value!r}")
        if self.low is not None and (value < self.low or (self.open_low and value <= self.low)):
            raise UsageError(f"{where}: {value} is outside the domain {self.domain_text()}")
        if self.high is not None and value > self.high:
            raise UsageError(f"{where}: {value} is outside the domain {self.domain_text()}")
        return float(value)

    def domain_text(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        opening = "(" if self.open_low or self.low is None else "["
        return f"{opening}{low}, {high}{']' if self.high is not None else ')'}"

    def describe(self) -> dict[str, Any]:
        def listed(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        out = {"type": "continuous", "default": listed(self.default), "domain": self.domain_text(), "doc": self.doc}
        return out if self.threedb is None else {**out, "threedb_default": listed(self.threedb)}


@dataclass(frozen=True)
class Discrete:
    """A parameter with a set of values: ``default`` values searched when the config is silent."""

    default: tuple[Any, ...]
    choices: tuple[Any, ...] | None = None  # the allowed values, when they form a fixed set
    doc: str = ""
    field: str | None = None
    threedb: tuple[Any, ...] | None = None  # 3DB's default values where they differ (3DB-form configs use them)
    kind: ClassVar[str] = "discrete"

    def check(self, value: Any, where: str) -> Any:
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        return value

    def describe(self) -> dict[str, Any]:
        out = {"type": "discrete", "default": list(self.default),
               "choices": list(self.choices) if self.choices is not None else None, "doc": self.doc}
        return out if self.threedb is None else {**out, "threedb_default": list(self.threedb)}


Param = Continuous | Discrete


class Control:
    """Base class. ``params`` maps parameter names to their specs; ``root`` resolves relative file names."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "pre"  # "pre" writes a SceneState, "post" maps the rendered image
    params: ClassVar[dict[str, Param]] = {}
    doc: ClassVar[str] = ""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else Path.cwd()

    def check_value(self, param: str, value: Any) -> Any:
        """Validate one value (domain, choices, files it names); returns the canonical value."""
        return self.params[param].check(value, f"{self.name}.{param}")

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        raise NotImplementedError(f"control {self.name} is not a pre-render control")

    def process(self, rgb: torch.Tensor, alpha: torch.Tensor, args: dict[str, Any],
                generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"control {self.name} is not a post-render control")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"name": cls.name, "kind": cls.kind, "doc": cls.doc,
                "parameters": {name: spec.describe() for name, spec in cls.params.items()}}


CONTROLS: Registry[type[Control]] = Registry("control")


def register_control(name: str):
    """Class decorator: register a :class:`Control` subclass under ``name``."""

    def wrap(cls: type[Control]) -> type[Control]:
        cls.name = name
        return CONTROLS.register(name)(cls)

    return wrap


def list_controls() -> list[str]:
    return CONTROLS.names()


def get_control(name: str) -> type[Control]:
    return CONTROLS.get(name)
