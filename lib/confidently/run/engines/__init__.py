"""Engines run independent units of work and hand back their results in input order.

``serial`` runs them here; ``ray`` spreads them over a Ray cluster (tasks for stateless
units, actors for units that keep a model or renderer loaded). Results do not depend on
the engine because every unit seeds itself from (seed, id). A new engine is one module
that calls :func:`register_engine`.
"""

from confidently.run.engines import ray_engine, serial  # noqa: F401  (register the built-in engines)
from confidently.run.engines.base import ENGINES, Engine, create_engine, list_engines, register_engine

__all__ = ["ENGINES", "Engine", "create_engine", "list_engines", "register_engine"]
