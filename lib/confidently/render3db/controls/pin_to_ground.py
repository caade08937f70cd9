"""``pin_to_ground``: drop (or lift) the placed object so its lowest point sits at a height (3DB's control)."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("pin_to_ground")
class PinToGround(Control):
    doc = ("Translate the object vertically so its lowest vertex, after orientation/position/scale, sits at height "
           "`z_ground` (bounding radii; Blender units for a 3DB ROOT's objects; 3DB: list it after those controls).")
    params = {"z_ground": Continuous((0.0, 1.0), field="ground", doc="height of the object's lowest point")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.ground = args["z_ground"]
