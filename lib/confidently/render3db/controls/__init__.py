"""Controls: named, parameterised scene or image changes, one file each.

A control declares its parameters — continuous (a default range and a domain the range must stay in)
or discrete (default values, and the allowed choices when there is a fixed set) — and is either
*pre-render* (``apply(state, args, context)`` writes fields of a fresh
:class:`~confidently.render.scene.SceneState`, so nothing needs undoing) or *post-render*
(``process(rgb, alpha, args, generator)`` maps the rendered image to a new one). A parameter the
config does not mention takes its default (3DB's rule: a default range is searched). Adding a control
is one module here that decorates its class with ``@register_control("name")``.
"""

from confidently.render3db.controls import (  # noqa: F401  (register the built-in controls)
    background,
    camera,
    denoiser,
    imagenet_c,
    light,
    material,
    mug_liquid,
    obj_loc_in_frame,
    occlusion,
    orientation,
    pin_to_ground,
    pointlight,
    position,
    scale,
    texture,
)
from confidently.render3db.controls.base import (
    CONTROLS,
    Continuous,
    Control,
    Discrete,
    get_control,
    list_controls,
    register_control,
)

__all__ = ["CONTROLS", "Continuous", "Control", "Discrete", "get_control", "list_controls", "register_control"]
