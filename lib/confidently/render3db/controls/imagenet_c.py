"""``imagenet_c``: an ImageNet-C style corruption of the render (post-render), from the shared registry."""

from __future__ import annotations

from typing import Any

import torch

from confidently.data.corruptions import SEVERITIES, corrupt, list_corruptions
from confidently.render3db.controls.base import Control, Discrete, register_control

# 3DB's default corruption list, in its order (a 3DB-form grid visits them so)
THREEDB_ORDER = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                 "zoom_blur", "snow", "frost", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate",
                 "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


@register_control("imagenet_c")
class ImagenetC(Control):
    kind = "post"
    doc = ("Corrupt the render with `corruption_name` at `severity` (1-5; 0 = clean), seeded per render. The "
           "corruptions are ImageNet-C's (the imagecorruptions package), shared with unadv-patch.")
    params = {"corruption_name": Discrete(tuple(list_corruptions()), tuple(list_corruptions()), threedb=THREEDB_ORDER,
                                          doc="a registered corruption"),
              "severity": Discrete(SEVERITIES, (0, *SEVERITIES), doc="1 (mild) to 5 (severe)")}

    def process(self, rgb: torch.Tensor, alpha: torch.Tensor, args: dict[str, Any],
                generator: torch.Generator) -> torch.Tensor:
        return corrupt(rgb.unsqueeze(0), args["corruption_name"], int(args["severity"]), generator)[0]
