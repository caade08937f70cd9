"""The engine protocol and registry (a leaf module: each engine file imports it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confidently.registry import Registry


class Engine(ABC):
    """Where units of work run: in this process, or on a cluster's workers."""

    name: str
    workers_ready: float | None = None  # seconds the last map_stateful took to build every worker (start-up)

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, results in input order. ``fn`` must be importable (picklable)."""

    @abstractmethod
    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        """Build ``worker = factory()`` once per worker process, then ``worker(item)`` per item, in order."""

    def close(self) -> None:  # noqa: B027 - an engine that starts nothing releases nothing
        """Release what the engine started."""


ENGINES: Registry[Callable[..., Engine]] = Registry("engine")
register_engine = ENGINES.register
list_engines = ENGINES.names


def create_engine(name: str = "serial", **options: Any) -> Engine:
    """An engine by name; options (e.g. ``address`` for Ray) go to its constructor."""
    return ENGINES.get(name)(**options)
