"""Questions asked of an estimate (``influence.safetensors``): which source units help or hurt overall, a
target class or one example; which target examples a unit drives; which source examples leak into the
targets. Answers are records; ties go to the lower index and NaN influences rank last."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.influence.estimate import Influence
from confidently.io.artifacts import load_artifact
from confidently.run.console import console


def load_influence(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An estimate's tensors and metadata, refused early when the file is not an estimate."""
    tensors, meta = load_artifact(path)
    if "influence" not in tensors or "overall" not in tensors:
        raise InvalidInput(f"{path} is not an influence file (write one with `influence estimate --out`)")
    return tensors, meta


def ranked(values: torch.Tensor, sign: str) -> list[int]:
    """Unit order by value (pos: descending, otherwise ascending), NaN last, ties by index."""
    keyed = [(math.inf if math.isnan(v) else (-v if sign == "pos" else v), k) for k, v in enumerate(values.tolist())]
    return [k for _, k in sorted(keyed)]


def overall_ranking(result: Influence, info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every unit from most helpful to most harmful overall, with its standard error and model counts
    (``info``: the estimate's metadata, see :func:`~confidently.influence.results.estimate_metadata`)."""
    names = info.get("unit_names") or []
    overall_se = result.stderr.nanmean(1)
    for rank, unit in enumerate(ranked(result.overall, "pos"), start=1):
        yield {"kind": "influence.rank", "run_id": info["run_id"], "target": info["target"],
               "estimator": info.get("estimator", "diff-means"), "unit": unit,
               "name": names[unit] if unit < len(names) else str(unit),
               "overall": round(float(result.overall[unit]), 6), "stderr": round(float(overall_se[unit]), 6),
               "rank": rank, "n_in": int(result.n_in[unit]), "n_out": int(result.n_out[unit])}


def top_units(tensors: dict[str, torch.Tensor], meta: dict[str, Any], by: str = "overall", sign: str = "pos",
              k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` most helpful (``sign`` pos) or harmful (neg) units ``by`` overall influence, on the targets
    of one label (``class:C``) or on one target example (``target:J``)."""
    if sign not in ("pos", "neg"):
        raise UsageError(f"`sign` {sign!r}: choose pos or neg")
    kind, _, value = by.partition(":")
    try:
        if kind == "overall":
            values = tensors["overall"]
        elif kind == "class":
            values = tensors["per_class"][:, int(value)]
        elif kind == "target":
            values = tensors["influence"][:, int(value)]
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"`by` {by!r}: expected overall, class:C (0..{tensors['per_class'].shape[1] - 1}) or "
                         f"target:J (0..{tensors['influence'].shape[1] - 1})") from None
    return [{"kind": "influence.rank", "run_id": meta.get("run_id"), "by": by, "sign": sign, "unit": unit,
             "value": round(float(values[unit]), 6), "rank": rank}
            for rank, unit in enumerate(ranked(values, sign)[:k], start=1)]


def driven_targets(tensors: dict[str, torch.Tensor], unit: int, sign: str = "pos", k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` target examples ``unit`` raises (pos) or lowers most: the subpopulation it drives
    (thesis Fig 8.4: "ostrich" → ostrich-like birds)."""
    units = tensors["influence"].shape[0]
    if not 0 <= unit < units:
        raise UsageError(f"source unit {unit} does not exist: units are 0..{units - 1}")
    row = tensors["influence"][unit]
    return [{"kind": "influence.subpop", "unit": unit, "target_index": target,
             "label": int(tensors["labels"][target]), "influence": round(float(row[target]), 6)}
            for target in ranked(row, sign)[:k]]


def explain_target(tensors: dict[str, torch.Tensor], target: int, k: int = 5) -> dict[str, Any]:
    """The ``k`` units that push one target example down most and up most: candidates for its mistakes."""
    targets = tensors["influence"].shape[1]
    if not 0 <= target < targets:
        raise UsageError(f"target example {target} does not exist: examples are 0..{targets - 1}")
    column = tensors["influence"][:, target]
    return {"kind": "influence.explain", "target_index": target, "label": int(tensors["labels"][target]),
            "negative": [{"unit": u, "influence": round(float(column[u]), 6)} for u in ranked(column, "neg")[:k]],
            "positive": [{"unit": u, "influence": round(float(column[u]), 6)} for u in ranked(column, "pos")[:k]]}


def leakage_candidates(tensors: dict[str, torch.Tensor], meta: dict[str, Any], k: int = 5) -> Iterator[dict[str, Any]]:
    """Per target example, the ``k`` units that help it most (near-duplicates of it in the source: leakage),
    then one record of the ``k`` most harmful units overall (mislabelled, ambiguous or misleading images)."""
    influence = tensors["influence"]
    names = json.loads(meta["unit_names"]) if isinstance(meta.get("unit_names"), str) else meta.get("unit_names")
    if influence.shape[0] < 10 * influence.shape[1] and meta.get("granularity") == "class":
        console.print("[yellow]note:[/] these units are classes; leakage is meant for example-granularity influences")

    def unit(u: int, values: torch.Tensor) -> dict[str, Any]:
        return {"unit": u, "name": names[u] if names else str(u), "influence": round(float(values[u]), 6)}

    for target in range(influence.shape[1]):
        column = influence[:, target]
        yield {"kind": "influence.leakage", "target_index": target, "label": int(tensors["labels"][target]),
               "top_positive": [unit(u, column) for u in ranked(column, "pos")[:k]]}
    yield {"kind": "influence.leakage", "scope": "overall",
           "most_negative": [unit(u, tensors["overall"]) for u in ranked(tensors["overall"], "neg")[:k]]}
