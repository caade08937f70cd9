"""``background``: replace what is behind the object by a solid HSV colour (post-render)."""

from __future__ import annotations

import colorsys
from typing import Any

import torch

from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("background")
class Background(Control):
    kind = "post"
    doc = "Composite the render over a solid colour of hue H, saturation S and value V, through its alpha."
    params = {channel: Continuous((0.0, 1.0), low=0.0, high=1.0, doc=f"{channel} of the colour")
              for channel in ("H", "S", "V")}

    def process(self, rgb: torch.Tensor, alpha: torch.Tensor, args: dict[str, Any],
                generator: torch.Generator) -> torch.Tensor:
        colour = torch.tensor(colorsys.hsv_to_rgb(args["H"], args["S"], args["V"]), dtype=rgb.dtype).view(3, 1, 1)
        return rgb * alpha + (1 - alpha) * colour
