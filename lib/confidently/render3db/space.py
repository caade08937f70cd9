"""The search space of an experiment and the policies that pick points in it.

Every non-fixed continuous parameter is one coordinate ``u ∈ [0, 1]`` mapped to ``low + u·(high − low)``;
every discrete parameter with more than one value is an index; fixed parameters are constant but still
logged. A policy yields points ``(u, d)``: ``grid`` (the exact cartesian product of ``linspace(0, 1, n)``
per coordinate — without the upper end for ``endpoint: false`` — and every discrete index), ``random``
(uniform, seeded per object × environment pair), or ``py:module:Class``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.registry import Registry
from confidently.render3db.settings import ControlSetup, Setting

Point = tuple[tuple[float, ...], tuple[int, ...]]


@dataclass(frozen=True)
class SearchSpace:
    settings: tuple[Setting, ...]  # every parameter of every control, in config order

    @property
    def continuous(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "continuous"]

    @property
    def discrete(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "discrete"]

    @property
    def fixed(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "fixed"]

    def unpack(self, u: tuple[float, ...], d: tuple[int, ...]) -> dict[str, Any]:
        """``{"control.param": value}`` for a point, every parameter included, in config order."""
        cont, disc = iter(u), iter(d)
        out = {}
        for s in self.settings:
            if s.mode == "continuous":
                out[s.key] = s.at(next(cont))
            elif s.mode == "discrete":
                out[s.key] = s.values[next(disc)]
            else:
                out[s.key] = s.value
        return out

    def describe(self) -> dict[str, Any]:
        return {"continuous": {s.key: [s.low, s.high] + ([] if s.endpoint else ["endpoint: false"])
                               for s in self.continuous},
                "discrete": {s.key: list(s.values) for s in self.discrete},
                "fixed": {s.key: s.value for s in self.fixed}}


def search_space(controls: list[ControlSetup]) -> SearchSpace:
    return SearchSpace(tuple(s for c in controls for s in c.settings.values()))


class Policy(ABC):
    """Yields the points for one (environment, object) pair; ``seed`` is that pair's seed."""

    def __init__(self, space: SearchSpace, **args: Any):
        self.space = space

    @abstractmethod
    def points(self, seed: int) -> Iterable[Point]:
        """The points to render, in order."""

    def count(self) -> int | None:
        """Points per pair when known up front (validate, dry-run and --max-renders use it)."""
        return None


POLICIES: Registry[type[Policy]] = Registry("policy")


def _int_arg(args: dict[str, Any], key: str, name: str, valid: tuple[str, ...], default: int | None = None) -> int:
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise UsageError(f"policy {name}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    value = args.get(key, default)
    if value is None:
        raise UsageError(f"policy {name}: needs {key}: N")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"policy {name}: {key} must be an integer >= 1, got {value!r}")
    return value


@POLICIES.register("grid")
class GridPolicy(Policy):
    """``samples_per_dim`` values per continuous coordinate × every discrete value (exact product)."""

    def __init__(self, space: SearchSpace, **args: Any):
        super().__init__(space)
        self.n = _int_arg(args, "samples_per_dim", "grid", ("samples_per_dim",))

    def axis(self, setting: Setting) -> list[float]:
        if self.n == 1:
            return [0.0]
        if setting.endpoint:
            return [i / (self.n - 1) for i in range(self.n)]
        return [i / self.n for i in range(self.n)]

    def points(self, seed: int) -> Iterator[Point]:
        axes = [self.axis(s) for s in self.space.continuous]
        indices = [range(len(s.values)) for s in self.space.discrete]
        for u in itertools.product(*axes):
            for d in itertools.product(*indices):
                yield tuple(u), tuple(d)

    def count(self) -> int:
        total = self.n ** len(self.space.continuous)
        for s in self.space.discrete:
            total *= len(s.values)
        return total


@POLICIES.register("random")
class RandomPolicy(Policy):
    """``samples`` points per pair, uniform over every coordinate and discrete index, seeded per pair."""

    def __init__(self, space: SearchSpace, **args: Any):
        super().__init__(space)
        self.samples = _int_arg(args, "samples", "random", ("samples", "seed"))
        seed = args.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"policy random: seed must be an integer >= 0, got {seed!r}")

    def points(self, seed: int) -> Iterator[Point]:
        generator = torch.Generator().manual_seed(seed)
        cont, disc = self.space.continuous, self.space.discrete
        u = torch.rand(self.samples, len(cont), generator=generator, dtype=torch.float64)
        d = [torch.randint(0, len(s.values), (self.samples,), generator=generator) for s in disc]
        for i in range(self.samples):
            yield tuple(u[i].tolist()), tuple(int(x[i]) for x in d)

    def count(self) -> int:
        return self.samples


class CustomPolicy(Policy):
    """``py:module:Class``: ``Class(continuous_dim, discrete_sizes, **args)`` with ``points(seed)`` (or
    ``batches(seed)``) yielding ``(u, d)`` pairs (or lists of them)."""

    def __init__(self, space: SearchSpace, cls: type, **args: Any):
        super().__init__(space)
        self.inner = cls(len(space.continuous), [len(s.values) for s in space.discrete], **args)

    def points(self, seed: int) -> Iterator[Point]:
        if hasattr(self.inner, "batches"):
            source = (p for batch in self.inner.batches(seed) for p in batch)
        else:
            source = self.inner.points(seed)
        sizes = [len(s.values) for s in self.space.discrete]
        for u, d in source:
            u, d = tuple(float(x) for x in u), tuple(int(x) for x in d)
            if len(u) != len(self.space.continuous) or len(d) != len(sizes) or any(
                    not 0 <= x <= 1 for x in u) or any(not 0 <= x < k for x, k in zip(d, sizes, strict=True)):
                raise UsageError(f"custom policy yielded {u, d}: expected {len(self.space.continuous)} coordinates in "
                                 f"[0, 1] and indices below {sizes}")
            yield u, d

    def count(self) -> int | None:
        count = getattr(self.inner, "count", None)
        return count() if callable(count) else None


def make_policy(config: dict[str, Any], space: SearchSpace) -> Policy:
    args = {k: v for k, v in config.items() if k != "module"}
    module = str(config["module"])
    if module.startswith("py:"):
        return CustomPolicy(space, POLICIES.resolve(module), **args)
    return POLICIES.resolve(module, alias=lambda name: name.replace("_search", ""))(space, **args)
