"""``position``: translate the object after its rotation (in bounding radii; Blender units for 3DB's objects)."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("position")
class Position(Control):
    doc = ("Move the object by (offset_x, offset_y, offset_z) bounding radii, applied after the rotation (Blender "
           "units for a 3DB ROOT's objects, which keep their size).")
    params = {name: Continuous((-1.0, 1.0), field="offset", doc=f"translation along {name[-1]}")
              for name in ("offset_x", "offset_y", "offset_z")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.offset = (args["offset_x"], args["offset_y"], args["offset_z"])
