"""The engine protocol and registry (a leaf module: each engine file imports it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from confidently.registry import Registry


class Engine(Protocol):
    name: str

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, results in input order. ``fn`` must be importable (picklable)."""

    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        """Build ``worker = factory()`` once per worker process, then ``worker(item)`` per item, in order."""

    def close(self) -> None:
        """Release what the engine started."""


ENGINES: Registry[Callable[..., Engine]] = Registry("engine")
register_engine = ENGINES.register
list_engines = ENGINES.names


def create_engine(name: str = "serial", **options: Any) -> Engine:
    """An engine by name; options (e.g. ``address`` for Ray) go to its constructor."""
    return ENGINES.get(name)(**options)
