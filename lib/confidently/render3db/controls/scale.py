"""``scale``: uniform object scale."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("scale")
class Scale(Control):
    doc = ("Scale the object uniformly about its centre; a camera control listed after it frames the scaled object "
           "(as 3DB re-fits it), one listed before it (or none) frames scale 1.")
    params = {"factor": Continuous((0.25, 1.0), low=0.0, open_low=True, field="scale", doc="1 = original size")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.scale = args["factor"]
