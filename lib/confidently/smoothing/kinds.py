"""Ablation kinds, registered by name: what each kind's ablation sets band (rows, columns or both).

A leaf module free of torch, so a tool's ``--help`` can list the kinds without loading the method.
"""

from __future__ import annotations

from confidently.errors import UsageError
from confidently.registry import Registry

ABLATION_PARTS: Registry[list[tuple[str, ...]]] = Registry("ablation")  # kind → its sets' banded axes
list_ablations = ABLATION_PARTS.names


def register_ablation(name: str, *parts: tuple[str, ...]) -> None:
    """An ablation kind keeps a band of ``size`` pixels along each axis of a part ("rows", "cols"; several
    axes make a block, their product); several parts make the union of their sets (``both``: rows and columns)."""
    if not parts or any(not axes or set(axes) - {"rows", "cols"} for axes in parts):
        raise UsageError(f"ablation {name!r}: each part is a tuple of 'rows' and/or 'cols'")
    ABLATION_PARTS.register(name)([tuple(axes) for axes in parts])


register_ablation("column", ("cols",))
register_ablation("row", ("rows",))
register_ablation("block", ("rows", "cols"))
register_ablation("both", ("rows",), ("cols",))
