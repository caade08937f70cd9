"""``pointlight``: a coloured point light on a sphere around the object (3DB's experimental control)."""

from __future__ import annotations

import colorsys
from typing import Any

from confidently.render.scene import PointLight, SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("pointlight")
class PointLightControl(Control):
    doc = ("Add a point light of colour (H, S, V) and power `intensity` (W) at `distance` from the object's centre "
           "along (dir_x, dir_y, dir_z), added to the environment's light.")
    params = {"H": Continuous((0.0, 1.0), low=0.0, high=1.0, field="point_light", doc="hue of the light"),
              "S": Continuous((0.0, 1.0), low=0.0, high=1.0, field="point_light", doc="saturation of the light"),
              "V": Continuous((0.0, 1.0), low=0.0, high=1.0, field="point_light", doc="value of the light"),
              "intensity": Continuous((1000.0, 10000.0), low=0.0, field="point_light", doc="power in watts"),
              "distance": Continuous((5.0, 20.0), low=0.0, open_low=True, field="point_light",
                                     doc="distance from the object's centre"),
              "dir_x": Continuous((-1.0, 1.0), field="point_light", doc="x of the direction to the light"),
              "dir_y": Continuous((-1.0, 1.0), field="point_light", doc="y of that direction"),
              "dir_z": Continuous((0.0, 1.0), field="point_light", doc="z of that direction (up)")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        colour = tuple(float(c) for c in colorsys.hsv_to_rgb(args["H"], args["S"], args["V"]))
        direction = (args["dir_x"], args["dir_y"], args["dir_z"])
        if max(abs(d) for d in direction) < 1e-9:  # 3DB would divide by zero: light from straight above
            direction = (0.0, 0.0, 1.0)
        state.point_light = PointLight(colour, args["intensity"], args["distance"], direction)
