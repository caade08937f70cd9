"""``mug_liquid``: the mix of milk, coffee and water in the object's ``liquid`` material (3DB's case study)."""

from __future__ import annotations

from typing import Any

from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Continuous, Control, register_control


@register_control("mug_liquid")
class MugLiquid(Control):
    doc = ("Drive the object's material named `liquid`: `ratio_milk` and `ratio_coffee`, water = 1 - both (both 0 "
           "= water; a sum over 1 is scaled to 1, no water). "
           "A 3DB mug's own `coffee_milk_ratio`/`water_ratio` nodes are set; any other liquid material "
           "is replaced by a mix of the three liquids' colours.")
    params = {"ratio_milk": Continuous((0.0, 1.0), low=0.0, high=1.0, field="liquid", doc="share of milk"),
              "ratio_coffee": Continuous((0.0, 1.0), low=0.0, high=1.0, field="liquid", doc="share of coffee")}

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        milk, coffee = args["ratio_milk"], args["ratio_coffee"]
        if milk + coffee > 1 + 1e-9:  # a grid over both [0, 1] ranges reaches such points: 3DB renders them too
            total = milk + coffee
            milk, coffee = milk / total, coffee / total
        state.liquid = (milk, coffee)
