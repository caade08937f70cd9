"""``orientation``: the object's Euler rotation (mode XYZ, radians)."""

from __future__ import annotations

import math
from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("orientation")
class Orientation(Control):
    doc = "Rotate the object about its centre, Euler XYZ in radians (use endpoint: false on a full turn)."
    params = {axis: Continuous((-math.pi, math.pi), field="rotation", doc=f"rotation about {axis[-1]}")
              for axis in ("rotation_x", "rotation_y", "rotation_z")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.rotation = (args["rotation_x"], args["rotation_y"], args["rotation_z"])
