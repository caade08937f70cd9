"""Seeded splits: records into train/val (stratified by label), or classes into tasks.

Both depend only on the ids/labels and the seed, never on input order, so a split can be
recomputed anywhere and gives the same answer.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _allocate(count: int, fractions: dict[str, float]) -> list[str]:
    """Names for ``count`` ranked items, in proportion to ``fractions`` (largest remainders)."""
    total = sum(fractions.values())
    exact = {name: count * frac / total for name, frac in fractions.items()}
    sizes = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(fractions, key=lambda name: exact[name] - sizes[name], reverse=True)
    for name in by_remainder[: count - sum(sizes.values())]:
        sizes[name] += 1
    return [name for name in fractions for _ in range(sizes[name])]


def split_records(ids: Sequence[str], labels: Sequence[int | None], fractions: dict[str, float], seed: int = 0,
                  stratify: bool = True) -> list[str]:
    """Assign each record a split name; with ``stratify`` every label is split in the same proportions."""
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be non-negative and sum to more than 0: {fractions}")
    groups: dict[object, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label if stratify else None].append(index)
    names = [""] * len(ids)
    for members in groups.values():
        ranked = sorted(members, key=lambda i: _rank(seed, ids[i]))
        for index, name in zip(ranked, _allocate(len(ranked), fractions), strict=True):
            names[index] = name
    return names


def split_by_class(num_classes: int, groups: dict[str, float] | dict[str, list[int]], seed: int = 0) -> dict[int, str]:
    """Assign every class to a task: explicit class lists, or seeded fractions of the classes."""
    if all(isinstance(v, list) for v in groups.values()):
        mapping: dict[int, str] = {}
        for name, members in groups.items():
            for label in members:
                if not 0 <= label < num_classes:
                    raise ValueError(f"class {label} of group {name!r} is outside 0..{num_classes - 1}")
                if label in mapping:
                    raise ValueError(f"class {label} is in both {mapping[label]!r} and {name!r}")
                mapping[label] = name
        return mapping
    ranked = sorted(range(num_classes), key=lambda label: _rank(seed, f"class-{label}"))
    return dict(zip(ranked, _allocate(num_classes, groups), strict=True))
