"""``denoiser``: the renderer's denoiser on (3DB's control; Cycles' OpenImageDenoise). No parameters."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Control, register_control


@register_control("denoiser")
class Denoiser(Control):
    doc = "Denoise the render (Cycles' OpenImageDenoise); no parameters. Without it renders are not denoised."
    params = {}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        state.denoise = True
