"""``light``: scale the environment's light and tint it (a tool extension of 3DB's experimental light)."""

from __future__ import annotations

import colorsys
from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("light")
class Light(Control):
    doc = ("Multiply the environment's light by `intensity` and tint it with the colour of hue `hue` and "
           "saturation `saturation` (0 = white light, the default).")
    params = {"intensity": Continuous((0.5, 2.0), low=0.0, field="light", doc="multiplier of the light; 1 = unchanged"),
              "hue": Continuous(0.0, low=0.0, high=1.0, field="light_color", doc="hue of the light's colour"),
              "saturation": Continuous(0.0, low=0.0, high=1.0, field="light_color", doc="0 = white light")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.light = args["intensity"]
        if args["saturation"] > 0:
            state.light_color = tuple(float(c) for c in colorsys.hsv_to_rgb(args["hue"], args["saturation"], 1.0))
