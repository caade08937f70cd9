"""Named strategies for one axis that varies (fills, units, orders, triggers, recipes, engines...).

Adding a strategy is one decorated function or class: ``FILLS.register("black")(fn)``. Lookups of
an unknown name fail with the names that exist, as a usage error (exit 2) unless told otherwise.
:meth:`Registry.resolve` also takes a dotted module path, whose last part is the name (3DB's
``threedb.controls.blender.camera``), and ``py:module:Attr``, a user's own class, imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from confidently.errors import UsageError

T = TypeVar("T")


def import_attr(target: str, what: str = "object", error: type[Exception] = UsageError) -> Any:
    """``module:Attr`` (or ``module.Attr``) imported, or ``error`` naming ``what`` and the reason."""
    module, sep, attr = target.partition(":")
    if not sep:
        module, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise error(f"{what} py:{target}: cannot import ({exc})") from None


class Registry(Generic[T]):
    """Strategies of one kind by name. ``builtins`` names the modules that register the built-in ones: they
    are imported the first time the registry is read, so a lookup never depends on what happened to be
    imported before (packages load lazily)."""

    def __init__(self, kind: str, error: type[Exception] = UsageError, builtins: tuple[str, ...] = ()):
        self.kind, self.error = kind, error
        self._items: dict[str, T] = {}
        self._builtins = builtins

    def _load_builtins(self) -> None:
        builtins, self._builtins = self._builtins, ()
        for module in builtins:
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            self._items[name] = item
            return item

        return wrap

    def get(self, name: str) -> T:
        self._load_builtins()
        if name not in self._items:
            raise self.error(f"unknown {self.kind} {name!r}; choose {', '.join(self.names())}")
        return self._items[name]

    def resolve(self, spec: str, alias: Callable[[str], str] | None = None) -> T:
        """An item by name, by a dotted path whose last part (through ``alias``) is its name, or by
        ``py:module:Attr`` (imported, not registered: the caller checks what it got)."""
        if spec.startswith("py:"):
            return import_attr(spec[3:], self.kind, self.error)
        name = spec.rsplit(".", 1)[-1]
        return self.get(alias(name) if alias else name)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(self._items)

    def items(self):
        self._load_builtins()
        return self._items.items()
