"""Choosing which source rows carry the planted bias (thesis §7.2; BadNets for relabelling).

``group`` mode stamps a fraction of the rows of a class group and keeps their labels (a
correlation, not a relabelling: the thesis's default); ``relabel`` mode stamps a fraction of
the whole set and relabels it to a target class (all-to-one) or to the next class
(all-to-all). Rows are chosen by id, never by position: each candidate gets a score from
(seed, id) and the lowest scores win, so the poisoned set does not depend on input order,
and the count is exactly round(rate · denominator) (``bernoulli`` draws each independently).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from confidently.errors import UsageError
from confidently.run.seeding import derive_seed

SELECTION_SEED = 10  # the reference code's poisoning seed: the default whenever the user gives none


def parse_classes(text: str, num_classes: int | None = None) -> set[int]:
    """``0``, ``151-268``, ``1,3,5-7`` → a set of class indices (checked against ``num_classes``)."""
    chosen: set[int] = set()
    try:
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            low, _, high = part.partition("-")
            first, last = int(low), int(high) if high else int(low)
            if last < first:
                raise ValueError
            chosen.update(range(first, last + 1))
    except ValueError:
        raise UsageError(f"classes {text!r}: expected indices and ranges, e.g. 0 or 151-268 or 1,3,5-7") from None
    if not chosen:
        raise UsageError("no classes given")
    if num_classes is not None and (min(chosen) < 0 or max(chosen) >= num_classes):
        raise UsageError(f"classes {text!r} name classes outside 0..{num_classes - 1} (the data has {num_classes})")
    return chosen


@dataclass(frozen=True)
class PoisonPlan:
    """What ``poison`` chose: row positions, the new labels (relabel mode), and the counts."""

    rows: list[int]
    new_labels: dict[int, int]
    candidates: int
    denominator: int
    rate: float

    @property
    def realised_rate(self) -> float:
        return len(self.rows) / self.denominator if self.denominator else 0.0


def select_poison(ids: Sequence[str], labels: Sequence[int | None], *, rate: float, mode: str = "group",
                  group: set[int] | None = None, rate_of: str | None = None, sampling: str = "exact",
                  seed: int = SELECTION_SEED, target_label: int | None = None, exclude_target: bool = True,
                  num_classes: int | None = None) -> PoisonPlan:
    """The rows to stamp (and relabel) for a poisoning spec."""
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"--rate {rate}: expected a fraction in [0, 1]")
    if mode not in ("group", "relabel"):
        raise UsageError(f"--mode {mode!r}: choose group or relabel")
    if sampling not in ("exact", "bernoulli"):
        raise UsageError(f"--sampling {sampling!r}: choose exact or bernoulli")
    rate_of = rate_of or ("group" if mode == "group" else "dataset")
    if rate_of not in ("group", "dataset"):
        raise UsageError(f"--rate-of {rate_of!r}: choose group or dataset")
    if mode == "group":
        if not group:
            raise UsageError("--mode group needs --group-classes")
        candidates = [i for i, label in enumerate(labels) if label in group]
        if not candidates:
            raise UsageError(f"no row is labelled with a class of the group {sorted(group)[:10]}")
    else:
        if target_label is None:
            raise UsageError("--mode relabel needs --target-label (all-to-one) or --target-label -1 (all-to-all)")
        if num_classes is not None and not -1 <= target_label < num_classes:
            raise UsageError(f"--target-label {target_label} is outside 0..{num_classes - 1}")
        candidates = [i for i, label in enumerate(labels) if label is not None
                      and not (exclude_target and target_label >= 0 and label == target_label)]
    denominator = len(candidates) if rate_of == "group" else len(labels)
    scores = {i: derive_seed(seed, ids[i], "poison") / 2**63 for i in candidates}
    if sampling == "exact":
        count = round(rate * denominator)
        if count > len(candidates):
            raise UsageError(f"`rate` {rate} of {denominator} rows is {count}, more than the {len(candidates)} "
                             "candidates")
        rows = sorted(sorted(candidates, key=lambda i: scores[i])[:count])
    else:
        probability = min(1.0, rate * denominator / len(candidates)) if candidates else 0.0
        rows = [i for i in candidates if scores[i] < probability]
    new_labels: dict[int, int] = {}
    if mode == "relabel":
        for i in rows:
            if target_label >= 0:
                new_labels[i] = target_label
            else:
                if num_classes is None:
                    raise UsageError("all-to-all relabelling needs the number of classes")
                new_labels[i] = (labels[i] + 1) % num_classes
    return PoisonPlan(rows, new_labels, len(candidates), denominator, rate)


def fraction_of_rows(ids: Sequence[str], classes: Sequence[Hashable], rate: float, seed: int, salt: str) -> list[int]:
    """round(rate · n) rows of each class (``classes``: one key per row), lowest (seed, id, salt) score first.

    Chosen by id, so the same rows whatever the order; a de-biasing or evaluation stamp that is the same
    fraction of every class carries no label information (give every row one key for a plain fraction).
    """
    members: dict[Hashable, list[int]] = {}
    for row, key in enumerate(classes):
        members.setdefault(key, []).append(row)
    chosen: list[int] = []
    for rows in members.values():
        chosen += sorted(rows, key=lambda i: derive_seed(seed, ids[i], salt))[:round(rate * len(rows))]
    return sorted(chosen)
