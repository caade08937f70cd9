"""The serial engine: every unit in this process, one after another."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confidently.run.engines.base import Engine, register_engine


@register_engine("serial")
class SerialEngine(Engine):
    name = "serial"

    def __init__(self, **_: Any):
        pass

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return map(fn, items)

    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        started = time.perf_counter()
        worker = factory()
        self.workers_ready = time.perf_counter() - started
        return map(worker, items)
