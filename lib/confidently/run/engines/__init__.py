"""Engines run independent units of work and hand back their results in input order.

``serial`` runs them here; ``ray`` spreads them over a Ray cluster (tasks for stateless
units, actors for units that keep a model or renderer loaded). Results do not depend on
the engine because every unit seeds itself from (seed, id). A new engine is one module
that calls :func:`register_engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from confidently.errors import UsageError


class Engine(Protocol):
    name: str

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, results in input order. ``fn`` must be importable (picklable)."""

    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        """Build ``worker = factory()`` once per worker process, then ``worker(item)`` per item, in order."""

    def close(self) -> None:
        """Release what the engine started."""


_ENGINES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str) -> Callable[[Callable[..., Engine]], Callable[..., Engine]]:
    def wrap(factory: Callable[..., Engine]) -> Callable[..., Engine]:
        _ENGINES[name] = factory
        return factory

    return wrap


def list_engines() -> list[str]:
    return sorted(_ENGINES)


def create_engine(name: str = "serial", **options: Any) -> Engine:
    """An engine by name; options (e.g. ``address`` for Ray) go to its constructor."""
    if name not in _ENGINES:
        raise UsageError(f"unknown engine {name!r}; choose from {', '.join(list_engines())}")
    return _ENGINES[name](**options)


from confidently.run.engines import ray_engine, serial  # noqa: E402,F401  (register the built-in engines)
