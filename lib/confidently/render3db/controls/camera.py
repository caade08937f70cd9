"""``camera``: where the camera stands and what lens it has (3DB's CameraControl)."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("camera")
class Camera(Control):
    doc = ("Camera on the ray from the object along the view-point vector, aimed at the object's centre as the "
           "controls listed before it placed it (3DB frames the moved object); at zoom 1 the object "
           "just fits the frame (>1 closer); focal length sets the field of view; a finite aperture (f-stop) "
           "focuses on the object with depth of field (off unless given).")
    params = {
        "view_point_x": Continuous((-1.0, 1.0), field="view_point", doc="x of the direction to the camera"),
        "view_point_y": Continuous((-1.0, 1.0), field="view_point", doc="y of that direction"),
        "view_point_z": Continuous((0.0, 1.0), field="view_point", doc="z of that direction (up)"),
        "zoom_factor": Continuous((0.5, 2.0), low=0.0, open_low=True, field="zoom",
                                  doc="1 = fitted; 2 = twice as close"),
        "aperture": Continuous(None, low=0.0, open_low=True, nullable=True, field="aperture",
                               doc="f-stop, e.g. 8; null = no depth of field (3DB's range: [1, 32])"),
        "focal_length": Continuous((10.0, 400.0), low=0.0, open_low=True, field="focal_length",
                                   doc="mm on a 36 mm sensor"),
    }

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.view_point = (args["view_point_x"], args["view_point_y"], args["view_point_z"])
        state.zoom = args["zoom_factor"]
        state.aperture = args["aperture"]
        state.focal_length = args["focal_length"]
        state.aim = state.offset
