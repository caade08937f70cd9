"""The search space of an experiment and the policies that pick points in it.

Every non-fixed continuous parameter is one coordinate ``u ∈ [0, 1]`` mapped to ``low + u·(high − low)``;
every discrete parameter with more than one value is an index; fixed parameters are constant but still
logged. A 3DB-form control given twice keeps 3DB's coordinates (one per range of each entry), so its grid
counts and visits what 3DB's does, the last coordinate of a parameter setting it. A policy yields points
``(u, d)``: ``grid`` (the exact cartesian product of ``linspace(0, 1, n)`` per coordinate — without the
upper end for ``endpoint: false`` — and every discrete index), ``random``
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
    # 3DB's coordinates where they differ from the settings' (a 3DB-form control given twice): the key of each
    # continuous coordinate, in config order, a key once per entry that ranges it; each discrete key and count
    coordinates: tuple[str, ...] | None = None
    choices: tuple[tuple[str, int], ...] | None = None

    @property
    def continuous(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "continuous"]

    @property
    def discrete(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "discrete"]

    @property
    def fixed(self) -> list[Setting]:
        return [s for s in self.settings if s.mode == "fixed"]

    @property
    def axes(self) -> tuple[str, ...]:
        """The key of each continuous coordinate a policy draws."""
        return self.coordinates if self.coordinates is not None else tuple(s.key for s in self.continuous)

    @property
    def sizes(self) -> list[int]:
        """The count of each discrete coordinate a policy draws."""
        return [n for _, n in self.choices] if self.choices is not None else [len(s.values) for s in self.discrete]

    def shape(self) -> tuple[int, list[int]]:
        """Continuous coordinates and discrete counts (3DB's ``generate_description``)."""
        return len(self.axes), self.sizes

    def endpoint(self, key: str) -> bool:
        setting = next((s for s in self.continuous if s.key == key), None)
        return setting.endpoint if setting is not None else True

    def unpack(self, u: tuple[float, ...], d: tuple[int, ...]) -> dict[str, Any]:
        """``{"control.param": value}`` for a point, every parameter included, in config order. Where a key has
        several coordinates (a control given twice) the last sets it, as in 3DB; a fixed value overrides them."""
        last = {key: i for i, key in enumerate(self.axes)}
        keys = [k for k, _ in self.choices] if self.choices is not None else [s.key for s in self.discrete]
        index = {key: i for i, key in enumerate(keys)}
        out = {}
        for s in self.settings:
            if s.mode == "continuous":
                out[s.key] = s.at(u[last[s.key]])
            elif s.mode == "discrete":
                out[s.key] = s.values[d[index[s.key]]]
            else:
                out[s.key] = s.value
        return out

    def describe(self) -> dict[str, Any]:
        out = {"continuous": {s.key: [s.low, s.high] + ([] if s.endpoint else ["endpoint: false"])
                              for s in self.continuous},
               "discrete": {s.key: list(s.values) for s in self.discrete},
               "fixed": {s.key: s.value for s in self.fixed}}
        if self.coordinates is not None:  # 3DB's extra coordinates, so a reader sees why the grid is larger
            out["coordinates"] = {"continuous": list(self.coordinates), "discrete": dict(self.choices or ())}
        return out


def search_space(controls: list[ControlSetup]) -> SearchSpace:
    """The space of the controls; for a 3DB-form control given twice, 3DB's coordinates: one per range of each
    entry (its ``continuous_args`` list) and one per discrete key, counted by the last entry with several values
    (its ``discrete_args`` dict), so that the grid counts and visits what 3DB's does."""
    settings = tuple(s for c in controls for s in c.settings.values())
    if all(len(c.entries) <= 1 for c in controls):
        return SearchSpace(settings)
    entries = sorted((entry for c in controls for entry in c.entries), key=lambda e: e[0])  # parse_controls sets all
    coordinates = tuple(s.key for _, given in entries for s in given.values() if s.mode == "continuous")
    choices: dict[str, int] = {}
    for _, given in entries:
        for s in given.values():
            if s.mode == "discrete":
                choices[s.key] = len(s.values)
    return SearchSpace(settings, coordinates, tuple(choices.items()))


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

    def axis(self, key: str) -> list[float]:
        if self.n == 1:
            return [0.0]
        if self.space.endpoint(key):
            return [i / (self.n - 1) for i in range(self.n)]
        return [i / self.n for i in range(self.n)]

    def points(self, seed: int) -> Iterator[Point]:
        axes = [self.axis(key) for key in self.space.axes]
        indices = [range(n) for n in self.space.sizes]
        for u in itertools.product(*axes):
            for d in itertools.product(*indices):
                yield tuple(u), tuple(d)

    def count(self) -> int:
        total = self.n ** len(self.space.axes)
        for n in self.space.sizes:
            total *= n
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
        u = torch.rand(self.samples, len(self.space.axes), generator=generator, dtype=torch.float64)
        d = [torch.randint(0, n, (self.samples,), generator=generator) for n in self.space.sizes]
        for i in range(self.samples):
            yield tuple(u[i].tolist()), tuple(int(x[i]) for x in d)

    def count(self) -> int:
        return self.samples


class CustomPolicy(Policy):
    """``py:module:Class``: ``Class(continuous_dim, discrete_sizes, **args)`` with ``points(seed)`` (or
    ``batches(seed)``) yielding ``(u, d)`` pairs (or lists of them)."""

    def __init__(self, space: SearchSpace, cls: type, **args: Any):
        super().__init__(space)
        self.inner = cls(*space.shape(), **args)

    def points(self, seed: int) -> Iterator[Point]:
        if hasattr(self.inner, "batches"):
            source = (p for batch in self.inner.batches(seed) for p in batch)
        else:
            source = self.inner.points(seed)
        dims, sizes = self.space.shape()
        for u, d in source:
            u, d = tuple(float(x) for x in u), tuple(int(x) for x in d)
            if len(u) != dims or len(d) != len(sizes) or any(
                    not 0 <= x <= 1 for x in u) or any(not 0 <= x < k for x, k in zip(d, sizes, strict=True)):
                raise UsageError(f"custom policy yielded {u, d}: expected {dims} coordinates in "
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
