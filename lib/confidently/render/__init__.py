"""Rendering objects under controlled viewpoints and light (Mitsuba 3 for differentiable textures)."""

from confidently.render.mitsuba_renderer import UV_CONVENTION, MitsubaRenderer, gather_texels
from confidently.render.views import View, ViewSampler, shift_frame

__all__ = ["UV_CONVENTION", "MitsubaRenderer", "View", "ViewSampler", "gather_texels", "shift_frame"]
