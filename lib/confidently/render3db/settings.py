"""What an experiment file says about its controls, parsed: one :class:`Setting` per control parameter and
one :class:`ControlSetup` per control. A leaf module: the config parser and the search space both use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confidently.render3db.controls import Control


@dataclass(frozen=True)
class Setting:
    """What the config says about one control parameter: fixed, a continuous range, or discrete values."""

    control: str
    param: str
    mode: str  # "fixed" | "continuous" | "discrete"
    value: Any = None
    low: float | None = None
    high: float | None = None
    endpoint: bool = True
    values: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.control}.{self.param}"

    def at(self, u: float) -> float:
        return self.low + u * (self.high - self.low)

    def describe(self) -> Any:
        if self.mode == "fixed":
            return self.value
        if self.mode == "continuous":
            return {"range": [self.low, self.high], "endpoint": self.endpoint}
        return {"values": list(self.values)}


@dataclass
class ControlSetup:
    """One entry of ``controls``: the control's name (or ``py:`` class path) and its parameter settings."""

    module: str
    settings: dict[str, Setting]
    cls: type[Control] = field(repr=False, default=Control)
    # (position in ``controls``, that entry's settings) for each entry naming this control: a 3DB-form control
    # given twice is one setup, but 3DB's grid has a coordinate for every range of every entry
    entries: tuple[tuple[int, dict[str, Setting]], ...] = field(repr=False, default=())

    @property
    def name(self) -> str:
        return self.cls.name

    def instantiate(self, root: Path) -> Control:
        return self.cls(root)
