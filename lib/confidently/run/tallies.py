"""Aggregate metrics that shard: each ``--shard i/N`` run reports integer tallies; the merge sums them.

An aggregate record (one per eps, one per model...) is computed from counts, so the records of N shards
carry ``shard: "i/N"`` and ``tallies`` (integers, lists of integers, dicts of those). ``merge_shards``
groups them by every field that is not computed from the tallies, checks that each group holds shards
0..N-1 exactly once, sums the tallies and lets the tool compute its metrics again: the merged record is
the unsharded run's record (the same integers give the same floats).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from confidently.errors import InvalidInput
from confidently.io.records import RecordReader
from confidently.run.shard import Shard

Tallies = dict[str, Any]


def add_tallies(left: Any, right: Any, where: str = "tallies") -> Any:
    """Element-wise sum of two tallies of the same shape (None where both are None)."""
    if left is None and right is None:
        return None
    if isinstance(left, dict) and isinstance(right, dict):
        if left.keys() != right.keys():
            raise InvalidInput(f"{where}: the shards count different things ({sorted(left)} vs {sorted(right)})")
        return {key: add_tallies(left[key], right[key], f"{where}.{key}") for key in left}
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            raise InvalidInput(f"{where}: lists of {len(left)} and {len(right)} counts (a different class count?)")
        return [add_tallies(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(left, right, strict=True))]
    if type(left) is int and type(right) is int:
        return left + right
    raise InvalidInput(f"{where}: expected counts, got {json.dumps(left)} and {json.dumps(right)}")


def merge_shards(records: Iterable[dict[str, Any]], computed: Iterable[str],
                 finish: Callable[[Tallies], dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per group of shard records, with the summed tallies and ``finish(tallies)``'s metrics.

    ``computed`` names the fields ``finish`` recomputes (they differ between shards); every other field
    must agree within a group. Groups keep the order in which they first appear.
    """
    computed = set(computed) | {"shard", "tallies"}
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        if not isinstance(record, dict) or "tallies" not in record or "shard" not in record:
            raise InvalidInput("not a shard record (no shard/tallies fields): run the command with --shard i/N")
        shard = Shard.parse(str(record["shard"]))
        key_fields = {k: v for k, v in record.items() if k not in computed}
        key = json.dumps(key_fields, sort_keys=True)
        group = groups.setdefault(key, {"fields": key_fields, "count": shard.count, "seen": {}, "order": record})
        if shard.count != group["count"]:
            raise InvalidInput(f"shard {shard} merged with shards of {group['count']}: one run, one N")
        if shard.index in group["seen"]:
            raise InvalidInput(f"shard {shard} appears twice for {_describe(key_fields)}")
        group["seen"][shard.index] = record["tallies"]
    merged = []
    for group in groups.values():
        missing = sorted(set(range(group["count"])) - set(group["seen"]))
        if missing:
            names = ", ".join(f"{i}/{group['count']}" for i in missing)
            raise InvalidInput(f"shard(s) {names} missing for {_describe(group['fields'])}")
        total = None
        for index in range(group["count"]):
            tallies = group["seen"][index]
            total = tallies if total is None else add_tallies(total, tallies)
        out = {k: v for k, v in group["order"].items() if k not in computed}  # the original field order
        out.update(finish(total))
        out["tallies"] = total
        merged.append(out)
    return merged


def read_shard_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Every record of the files (``-`` is stdin), in order."""
    return [record.data for path in paths for record in RecordReader(path, validate=False)]


def _describe(fields: dict[str, Any]) -> str:
    shown = {k: fields[k] for k in ("model", "data", "eps", "constraint") if k in fields}
    return json.dumps(shown or fields, sort_keys=True)
