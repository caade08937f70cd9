"""How an evaluation edit is run, by name: ``own`` (the toolbox's differentiable loop, :mod:`.editing`) or
``pipeline`` (diffusers' own pipelines, :mod:`.pipelines`). A backend is
``edit(ldm, pixels, cond, config, generator, mask) -> B×3×H×W in [0, 1]``; adding one is one registration."""

from confidently.registry import Registry

EDIT_BACKENDS = Registry("edit backend", builtins=("confidently.immunize.editing", "confidently.immunize.pipelines"))
register_edit_backend = EDIT_BACKENDS.register
