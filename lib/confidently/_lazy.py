"""Packages whose names load on first use (PEP 562), so ``--help`` and usage errors start without torch.

A package's ``__init__`` lists where each of its names lives; the first name asked for imports every one of
those modules, in the listed order, exactly as an eager ``__init__`` would (so strategies they register are
all registered), and later lookups are plain attributes. ``import confidently.run.console`` still runs the
package's ``__init__``, which now costs nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported name may equal one of its submodules (``run.console`` is also the Console
    object it holds): importing that submodule must not put the module where the name's object belongs."""

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if isinstance(value, types.ModuleType) and exports.get(name) == f"{self.__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose names come from the modules in
    ``exports`` (name → module; a name whose module is the package is a submodule, imported for what it
    registers and not exported)."""

    loading: list[bool] = []
    sys.modules[package].__class__ = _LazyPackage
    sys.modules[package].__dict__["_lazy_exports"] = exports

    def load(name: str) -> None:
        """One name from its module; a name whose module is the package itself is a submodule (imported for
        what it registers)."""
        module = exports[name]
        namespace = sys.modules[package].__dict__
        if module == package:
            namespace[name] = importlib.import_module(f"{package}.{name}")
        else:
            namespace[name] = getattr(importlib.import_module(module), name)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if loading:  # a module being loaded asks the package for a name: give it just that one
            load(name)
        else:
            loading.append(True)
            try:
                for each in exports:
                    load(each)
            finally:
                loading.clear()
        return sys.modules[package].__dict__[name]

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(exports))

    return __getattr__, __dir__, sorted(name for name, module in exports.items() if module != package)
