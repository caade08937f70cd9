"""The Ray engine: Ray Core tasks for stateless units, actors for units that keep state.

``address=None`` starts a private local cluster; ``address="auto"`` or ``"ray://host:port"``
joins an existing one (e.g. ``ray start --head`` inside a Slurm allocation). At most
``max_in_flight`` units are pending at once, so long streams do not flood the cluster,
and results come back in input order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confidently.errors import UsageError
from confidently.run.engines.base import Engine, register_engine


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


class _StatefulWorker:
    """Holds one worker built by ``factory`` inside a Ray actor."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]):
        self.worker = factory()

    def call(self, item: Any) -> Any:
        return self.worker(item)


@register_engine("ray")
class RayEngine(Engine):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_in_flight: int | None = None, **_: Any):
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'confidently[ray]'") from None
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            self._started_here = True
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.max_in_flight = max_in_flight or max(2, 2 * cluster_cpus)

    def _ordered(self, submit: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pending: deque = deque()
        for item in items:
            pending.append(submit(item))
            if len(pending) >= self.max_in_flight:
                yield self._ray.get(pending.popleft())
        while pending:
            yield self._ray.get(pending.popleft())

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        task = self._ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=2)(_apply)
        shared = self._ray.put(fn)  # shipped once, not with every unit
        return self._ordered(lambda item: task.remote(shared, item), items)

    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        count = workers or max(1, int(self._ray.cluster_resources().get("CPU", 1) // max(self.num_cpus, 1e-9)))
        actor_class = self._ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=1)(
            _StatefulWorker)
        actors = [actor_class.remote(factory) for _ in range(count)]
        turn = iter(range(1 << 62))

        def submit(item: Any) -> Any:
            return actors[next(turn) % count].call.remote(item)

        try:
            yield from self._ordered(submit, items)
        finally:
            for actor in actors:
                self._ray.kill(actor)

    def close(self) -> None:
        if self._started_here:
            self._ray.shutdown()
