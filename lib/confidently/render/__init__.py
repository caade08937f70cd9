"""Rendering objects under controlled viewpoints and light (Mitsuba 3 for differentiable textures)."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "UV_CONVENTION": "confidently.render.mitsuba_renderer",
    "MitsubaRenderer": "confidently.render.mitsuba_renderer",
    "gather_texels": "confidently.render.mitsuba_renderer",
    "View": "confidently.render.views",
    "ViewSampler": "confidently.render.views",
    "shift_frame": "confidently.render.views",
})
