"""Render engines, one file each, imported only when asked for (bpy and Mitsuba are heavy optional
packages). Adding an engine: one module defining a subclass of ``confidently.render.scene.Engine``,
plus its line in ``ENGINE_MODULES``."""

from __future__ import annotations

import importlib

from confidently.errors import UsageError

ENGINE_MODULES = {
    "null": ("confidently.render.engines.null", "NullEngine"),
    "mitsuba": ("confidently.render.engines.mitsuba_engine", "MitsubaEngine"),
    "bpy": ("confidently.render.engines.blender_engine", "BlenderEngine"),
}


def engine_class(name: str) -> type:
    """The engine class registered as ``name`` (its optional package is imported only when it renders)."""
    if name not in ENGINE_MODULES:
        raise UsageError(f"unknown render engine {name!r}; choose {', '.join(sorted(ENGINE_MODULES))}")
    module, attribute = ENGINE_MODULES[name]
    return getattr(importlib.import_module(module), attribute)
