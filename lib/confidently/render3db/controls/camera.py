"""``camera``: where the camera stands and what lens it has (3DB's CameraControl)."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("camera")
class Camera(Control):
    doc = ("Camera on the ray from the object along the view-point vector, aimed at the object's centre as the "
           "controls listed before it placed and scaled it (3DB frames the moved object); at zoom 1 the object, "
           "at the scale those controls gave it, just fits the frame (>1 closer); focal length sets the field of "
           "view; a finite aperture (f-stop) focuses on the object with depth of field (off unless given; a "
           "3DB-form config searches f/1 to f/32, as 3DB does). A view point of (0, 0, 0) is 3DB's (1, 1, 1) (it "
           "nudges every component by 1e-6).")
    params = {
        "view_point_x": Continuous((-1.0, 1.0), field="view_point", doc="x of the direction to the camera"),
        "view_point_y": Continuous((-1.0, 1.0), field="view_point", doc="y of that direction"),
        "view_point_z": Continuous((0.0, 1.0), field="view_point", doc="z of that direction (up)"),
        "zoom_factor": Continuous((0.5, 2.0), low=0.0, open_low=True, field="zoom",
                                  doc="1 = fitted; 2 = twice as close"),
        "aperture": Continuous(None, low=0.0, open_low=True, nullable=True, field="aperture", threedb=(1.0, 32.0),
                               doc="f-stop, e.g. 8; null = no depth of field (the default, except in a 3DB-form "
                                   "config, which searches 3DB's range [1, 32])"),
        "focal_length": Continuous((10.0, 400.0), low=0.0, open_low=True, field="focal_length",
                                   doc="mm on a 36 mm sensor"),
    }

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        view_point = (args["view_point_x"], args["view_point_y"], args["view_point_z"])
        # 3DB adds 1e-6 to each component, so its unit tests' (0, 0, 0) looks from (1, 1, 1)
        state.view_point = (1e-6, 1e-6, 1e-6) if not any(view_point) else view_point
        state.zoom = args["zoom_factor"] / state.scale  # 3DB fits the object as scaled so far: s× the distance
        state.aperture = args["aperture"]
        state.focal_length = args["focal_length"]
        state.aim = state.offset
