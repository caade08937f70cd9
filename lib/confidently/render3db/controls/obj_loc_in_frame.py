"""``obj_loc_in_frame``: where in the frame the object's centre appears."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("obj_loc_in_frame")
class ObjLocInFrame(Control):
    doc = ("Move the object in the plane parallel to the image so its centre projects at normalised frame "
           "coordinates (-1 left/bottom ... 1 right/top).")
    params = {"x_shift": Continuous((-1.0, 1.0), low=-1.0, high=1.0, field="frame_shift",
                                    doc="-1 left edge, 1 right edge"),
              "y_shift": Continuous((-1.0, 1.0), low=-1.0, high=1.0, field="frame_shift",
                                    doc="-1 bottom edge, 1 top edge")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.frame_shift = (args["x_shift"], args["y_shift"])
