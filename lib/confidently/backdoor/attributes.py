"""Natural features as record attributes (thesis §7.3): a 0/1 attribute splits an evaluation into rows
with and without it, and attribute-controlled subsets plant (or remove) a correlation in the source.

An attribute is a record field, at the top level or under ``attrs`` (``person``, ``male``...).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from confidently.errors import InvalidInput, UsageError
from confidently.io.records import Record
from confidently.run.seeding import derive_seed


def field_value(record: Record, name: str) -> Any:
    """A record field, looked up at the top level and then under ``attrs``."""
    if name in record.data:
        return record.data[name]
    return (record.data.get("attrs") or {}).get(name)


def group_attribute(records: Sequence[Record], name: str) -> list[bool]:
    """Each record's 0/1 attribute ``name``; a record without one is invalid input (no row is guessed)."""
    values = [field_value(record, name) for record in records]
    for record, value in zip(records, values, strict=True):
        if value not in (0, 1, True, False):
            raise record.error(f"group_attr {name}: expected 0/1 (or true/false) in every record", name)
    return [bool(value) for value in values]


def parse_cell(text: str) -> tuple[dict[str, str], int]:
    """``label=1,person=1:400`` → ({"label": "1", "person": "1"}, 400)."""
    conditions, _, count = text.rpartition(":")
    try:
        wanted = int(count)
        pairs = dict(part.split("=", 1) for part in conditions.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"`cell` {text!r}: expected FIELD=VALUE[,FIELD=VALUE...]:COUNT, e.g. label=1,person=0:400"
                         ) from None
    if not pairs or wanted < 0:
        raise UsageError(f"`cell` {text!r}: give at least one FIELD=VALUE and a count >= 0")
    return pairs, wanted


def draw_cells(records: Sequence[Record], cells: Sequence[str], seed: int,
               exclude_ids: Collection[str] = ()) -> list[tuple[int, str]]:
    """Exactly COUNT rows per cell (``FIELD=VALUE[,...]:COUNT``, values compared as text), each drawn by
    (seed, id) and at most once over all cells, none of ``exclude_ids``: (row, cell) pairs in input order.

    A cell that cannot be filled is an error: a biased or balanced subset is never silently down-sampled.
    """
    taken: set[int] = set()
    chosen: list[tuple[int, str]] = []
    for text in cells:
        conditions, wanted = parse_cell(text)
        members = [i for i, record in enumerate(records) if i not in taken and record.id not in exclude_ids
                   and all(str(field_value(record, k)) == v for k, v in conditions.items())]
        if len(members) < wanted:
            raise InvalidInput(f"`cell` {text!r} asks for {wanted} rows but only {len(members)} match "
                               "(none are drawn twice, excluded ids are skipped)")
        members.sort(key=lambda i: derive_seed(seed, records[i].id, "subset"))
        taken.update(members[:wanted])
        chosen += [(i, text) for i in members[:wanted]]
    return sorted(chosen)
