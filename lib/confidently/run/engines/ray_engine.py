"""The Ray engine: Ray Core tasks for stateless units, actors for units that keep state.

``address=None`` starts a private local cluster; ``address="auto"`` or ``"ray://host:port"``
joins an existing one (e.g. ``ray start --head`` inside a Slurm allocation). At most
``max_in_flight`` units are pending at once, so long streams do not flood the cluster,
and results come back in input order.

Each task or actor asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions share one GPU; Ray
shows a worker only the GPUs it assigned, so ``--device auto`` in the worker finds its own) and sizes
its thread pools to its CPUs before any work (:mod:`confidently.run.threads`). A worker that dies
(killed, out of memory, a node lost) costs no results: Ray runs its units again on a fresh worker (an actor
is rebuilt by its factory), at most ``RETRIES`` times a unit and ``RETRIES`` restarts an actor; past that,
the run stops with an error.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confidently.errors import ConfidentlyError, UsageError
from confidently.run.engines.base import Engine, register_engine

RETRIES = 3  # runs of a unit after the first, when its worker dies under it


def _take_share(threads: int, gpus: float) -> None:
    """Inside a worker, before its work: threads pinned to its CPUs; no GPU in sight when it asked for none
    (recent Ray no longer hides them from such workers), so ``--device auto`` runs it on the CPU."""
    import os

    from confidently.run.threads import pin_threads

    pin_threads(threads)
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _apply(fn: Callable[[Any], Any], item: Any, threads: int, gpus: float) -> Any:
    _take_share(threads, gpus)
    return fn(item)


class _StatefulWorker:
    """Holds one worker built by ``factory`` inside a Ray actor, which took its share first."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]], threads: int, gpus: float):
        _take_share(threads, gpus)
        self.worker = factory()

    def call(self, item: Any) -> Any:
        return self.worker(item)

    def ready(self) -> bool:
        """Answers once the factory has run: how a caller waits for the actors' start-up."""
        return True


@register_engine("ray")
class RayEngine(Engine):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_in_flight: int | None = None, **_: Any):
        if num_gpus < 0:
            raise UsageError(f"--gpus-per-worker {num_gpus}: must be 0 or more (fractions share a GPU)")
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'confidently[ray]'") from None
        from confidently.run.threads import cpu_share

        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            self._started_here = True
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.threads = cpu_share(num_cpus)
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if num_gpus > 0 and not ray.cluster_resources().get("GPU"):
            raise UsageError(f"--gpus-per-worker {num_gpus}, but the Ray cluster has no GPU (use 0 there)")
        self.max_in_flight = max_in_flight or max(2, 2 * cluster_cpus)

    def _ordered(self, submit: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pending: deque = deque()
        for item in items:
            pending.append(submit(item))
            if len(pending) >= self.max_in_flight:
                yield self._get(pending.popleft())
        while pending:
            yield self._get(pending.popleft())

    def _get(self, reference: Any) -> Any:
        errors = self._ray.exceptions
        try:
            return self._ray.get(reference)
        except (errors.WorkerCrashedError, errors.ActorDiedError) as exc:
            raise ConfidentlyError(f"Ray workers kept dying (each unit is retried {RETRIES} times, each actor "
                                   f"restarted {RETRIES} times): {str(exc).strip().splitlines()[0]}; the worker "
                                   "logs are under Ray's session folder (/tmp/ray/session_latest/logs)") from None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        task = self._ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=RETRIES)(_apply)
        shared = self._ray.put(fn)  # shipped once, not with every unit
        return self._ordered(lambda item: task.remote(shared, item, self.threads, self.num_gpus), items)

    def _workers_that_fit(self) -> int:
        """As many actors as the cluster's CPUs (and GPUs, when each asks for some) hold at once."""
        resources = self._ray.cluster_resources()
        count = resources.get("CPU", 1) // max(self.num_cpus, 1e-9)
        if self.num_gpus > 0:
            count = min(count, resources.get("GPU", 0) // self.num_gpus)
        return max(1, int(count))

    def map_stateful(self, factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                     workers: int | None = None) -> Iterator[Any]:
        count = workers or self._workers_that_fit()
        actor_class = self._ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=RETRIES,
                                       max_task_retries=RETRIES)(_StatefulWorker)
        started = time.perf_counter()
        actors = [actor_class.remote(factory, self.threads, self.num_gpus) for _ in range(count)]
        for answer in [actor.ready.remote() for actor in actors]:
            self._get(answer)
        self.workers_ready = time.perf_counter() - started
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
