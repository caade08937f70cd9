"""The three panels 3DB's dashboard opened on (the thesis' default views), as rows: where the model fails
(``failure_modes``), how each object depends on each control group (``per_object``) and the trends over all
objects and environments (``aggregate``).

Every row is ``{"analysis": "report", "panel": ..., "kind": ...}``. Parameters are those that vary among the
judged records (``object``, ``environment`` and ``render_args`` keys), grouped as :func:`accuracy_by` groups
them (exact grid values, or equal-width bins); a parameter's *control group* is its control's name (the part
of ``camera.zoom_factor`` before the dot), and ``object`` / ``environment`` are groups of their own.

Rows (``cell`` = ``n, correct, acc, ci`` with the Wilson 95 % interval; ``wrong`` = ids of up to 3 wrong
renders, in plan order; ``value`` is a bin's centre when ``bin: [low, high]`` is given; ``extreme`` =
``{"value", "acc", "n"}``):

- ``failure_modes``: ``kind: control`` with ``param, value, (bin), cell, wrong, rank``; ``kind: scene`` with
  ``object, environment, cell, wrong, rank``; ``kind: configuration`` with ``config: {param: value}``, ``cell,
  wrong, rank`` (``rank`` from 0 within each kind, at most ``top`` of each).
- ``per_object``: ``kind: object`` with ``object, cell``; ``kind: group`` with ``object, group, sensitivity,
  param, best: extreme, worst: extreme, params: {param: spread}``.
- ``aggregate``: ``kind: overall`` with ``cell, objects, environments``; ``kind: value`` with ``param, group,
  value, (bin), cell``; ``kind: trend`` with ``param, group, values, spread, best, worst, spearman`` (null for
  parameters that are not numbers).

Failure modes are ranked by the upper end of their Wilson 95 % interval (then accuracy), so a cell that fails
often ranks before one that failed once; only cells with a wrong render are listed. An object's sensitivity to
a parameter is the spread (best minus worst) of its accuracy over that parameter's values, the rest pooled; to
a group, the largest over the group's parameters. A numeric parameter's trend is Spearman's r between its value
and ``is_correct`` over the renders. :func:`plot_per_object` and :func:`plot_aggregate` draw the two figures
(for ``--plots`` and for ``report``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from confidently.render3db.analysis import TOP_LEVEL, Grouping, _is_number, judged, spearman, value_of, wilson

TOP = 10  # failure modes listed per kind
EXAMPLES = 3  # ids of wrong renders given with each failure mode


def group_of(param: str) -> str:
    """A parameter's control group: ``camera`` for ``camera.zoom_factor``; ``object``, ``environment`` alone."""
    return param.partition(".")[0]


def varied(records: list[dict[str, Any]]) -> list[str]:
    """The parameters that take more than one value among ``records``, objects and environments first."""
    names = ["object", "environment", *dict.fromkeys(k for r in records for k in r.get("render_args", {}))]
    return [n for n in names if len({repr(value_of(r, n)) for r in records}) > 1]


def _cell(correct: int, n: int) -> dict[str, Any]:
    return {"n": n, "correct": correct, "acc": correct / n, "ci": wilson(correct, n)}


def _planned(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The judged records in plan order (``order``, then id), so that shards concatenated in any order, or
    records in any order, give the same rows: values keep the order they are first met in."""
    def key(record: dict[str, Any]) -> tuple[float, str]:
        order = record.get("order")
        return (order if _is_number(order) else math.inf), str(record.get("id"))

    return sorted(judged(records), key=key)


class Tally:
    """Renders, correct ones and the wrong ones' ids of one cell."""

    def __init__(self):
        self.n, self.correct, self.wrong = 0, 0, []

    def add(self, record: dict[str, Any]) -> None:
        self.n += 1
        self.correct += int(record["is_correct"])
        if not record["is_correct"]:
            self.wrong.append(record.get("id"))

    def row(self) -> dict[str, Any]:
        return {**_cell(self.correct, self.n), "wrong": self.wrong[:EXAMPLES]}


def _per_value(records: list[dict[str, Any]], param: str, bins: int | None) -> list[dict[str, Any]]:
    """Per value (or bin) of ``param``: ``value`` (``bin``), n, correct, acc, ci and wrong renders' ids."""
    grouping = Grouping([value_of(r, param) for r in records], bins)
    tally: dict[int, Tally] = defaultdict(Tally)
    for r in records:
        tally[grouping.index(value_of(r, param))].add(r)
    return [{**grouping.row(i), **cell.row()} for i, cell in sorted(tally.items())]


def _rank(cells: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The cells with a wrong render, most clearly failing first (a stable sort: ties keep the given order)."""
    failing = sorted((c for c in cells if c["correct"] < c["n"]), key=lambda c: (c["ci"][1], c["acc"], -c["n"]))
    return [{**c, "rank": i} for i, c in enumerate(failing[:top])]


def failure_modes(records: list[dict[str, Any]], top: int = TOP, bins: int | None = None) -> list[dict[str, Any]]:
    """The lowest-accuracy values of the varied controls' parameters (``kind: control``), object × environment
    scenes (``scene``) and joint settings of the varied controls (``configuration``, scenes pooled)."""
    records = _planned(records)
    knobs = [p for p in varied(records) if p not in TOP_LEVEL]
    head = {"analysis": "report", "panel": "failure_modes"}
    controls = [{"param": p, **cell} for p in knobs for cell in _per_value(records, p, bins)]
    scenes: dict[tuple[str, str], Tally] = defaultdict(Tally)
    for r in records:
        scenes[(str(r.get("object")), str(r.get("environment")))].add(r)
    scene_cells = [{"object": o, "environment": e, **cell.row()} for (o, e), cell in sorted(scenes.items())]
    rows = [{**head, "kind": "control", **c} for c in _rank(controls, top)]
    rows += [{**head, "kind": "scene", **c} for c in _rank(scene_cells, top)]
    if knobs:
        groupings = {p: Grouping([value_of(r, p) for r in records], bins) for p in knobs}
        configs: dict[tuple[int, ...], Tally] = defaultdict(Tally)
        for r in records:
            configs[tuple(groupings[p].index(value_of(r, p)) for p in knobs)].add(r)
        config_cells = [{"config": {p: groupings[p].label(i) for p, i in zip(knobs, key, strict=True)}, **cell.row()}
                        for key, cell in sorted(configs.items())]
        rows += [{**head, "kind": "configuration", **c} for c in _rank(config_cells, top)]
    return rows


def _extremes(cells: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(best, worst) cells as ``{"value", "acc", "n"}``; ties go to the earlier value."""
    best = max(cells, key=lambda c: c["acc"])
    worst = min(cells, key=lambda c: c["acc"])
    return tuple({"value": c["value"], "acc": c["acc"], "n": c["n"]} for c in (best, worst))


def per_object(records: list[dict[str, Any]], bins: int | None = None) -> list[dict[str, Any]]:
    """Per object: its accuracy (``kind: object``), then per control group it varies over (``kind: group``)
    the sensitivity, the parameter that gives it, that parameter's best and worst values, and every
    parameter's spread in ``params``."""
    records = _planned(records)
    rows: list[dict[str, Any]] = []
    for name in sorted({str(r.get("object")) for r in records}):
        mine = [r for r in records if str(r.get("object")) == name]
        correct = sum(int(r["is_correct"]) for r in mine)
        head = {"analysis": "report", "panel": "per_object", "object": name}
        rows.append({**head, "kind": "object", **_cell(correct, len(mine))})
        groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
        for param in varied(mine):
            if param != "object":
                groups[group_of(param)][param] = _per_value(mine, param, bins)
        for group, params in groups.items():
            spreads = {p: max(c["acc"] for c in cells) - min(c["acc"] for c in cells) for p, cells in params.items()}
            param = max(spreads, key=spreads.get)
            best, worst = _extremes(params[param])
            rows.append({**head, "kind": "group", "group": group, "sensitivity": spreads[param], "param": param,
                         "best": best, "worst": worst, "params": spreads})
    return rows


def aggregate(records: list[dict[str, Any]], bins: int | None = None) -> list[dict[str, Any]]:
    """Over all objects and environments: the overall accuracy (``kind: overall``), then per varied parameter
    its accuracy per value (``kind: value``) and its trend (``kind: trend``: spread, best and worst values,
    Spearman's r of value against correctness for numeric parameters)."""
    records = _planned(records)
    head = {"analysis": "report", "panel": "aggregate"}
    correct = sum(int(r["is_correct"]) for r in records)
    rows = [{**head, "kind": "overall", **_cell(correct, len(records)),
             "objects": len({str(r.get("object")) for r in records}),
             "environments": len({str(r.get("environment")) for r in records})}]
    for param in varied(records):
        cells = _per_value(records, param, bins)
        group = group_of(param)
        rows += [{**head, "kind": "value", "param": param, "group": group,
                  **{k: v for k, v in c.items() if k != "wrong"}} for c in cells]
        values = [value_of(r, param) for r in records]
        numeric = all(_is_number(v) for v in values)
        best, worst = _extremes(cells)
        rows.append({**head, "kind": "trend", "param": param, "group": group, "values": len(cells),
                     "spread": best["acc"] - worst["acc"], "best": best, "worst": worst,
                     "spearman": spearman(values, [int(r["is_correct"]) for r in records]) if numeric else None})
    return rows


def dashboard_panels(records: list[dict[str, Any]], bins: int | None = None, top: int = TOP) -> list[dict[str, Any]]:
    """``analyze --report``: the failure-mode, per-object and aggregate panels, in that order."""
    return [*failure_modes(records, top, bins), *per_object(records, bins), *aggregate(records, bins)]


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(_short(v) for v in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_object(rows: list[dict[str, Any]], path: str) -> bool:
    """Objects × control groups, coloured by sensitivity, each object's accuracy beside its name; False (nothing
    written) when no object varies over anything."""
    import numpy as np

    groups = [r for r in rows if r["kind"] == "group"]
    if not groups:
        return False
    names = list(dict.fromkeys(g["group"] for g in groups))
    accuracy = {r["object"]: r["acc"] for r in rows if r["kind"] == "object"}
    objects = list(dict.fromkeys(r["object"] for r in rows))
    grid = np.full((len(objects), len(names)), np.nan)
    for g in groups:
        grid[objects.index(g["object"]), names.index(g["group"])] = g["sensitivity"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.2, 1.0 * len(names) + 2.5), max(3.0, 0.45 * len(objects) + 1.8)))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="magma_r", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.5 else
                    "black")
    ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30 if len(names) > 4 else 0)
    ax.set_yticks(range(len(objects)), [f"{o} (acc {accuracy[o]:.2f})" if o in accuracy else o for o in objects],
                  fontsize=8)
    fig.colorbar(image, ax=ax, label="sensitivity (best − worst accuracy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_aggregate(rows: list[dict[str, Any]], path: str, panels: int = 6) -> bool:
    """Accuracy per value (Wilson 95 %) of the first ``panels`` varied parameters, Spearman's r in the titles;
    False (nothing written) when nothing varies."""
    trends = [r for r in rows if r["kind"] == "trend"][:panels]
    if not trends:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(trends), figsize=(3.3 * len(trends), 3.4), squeeze=False)
    for ax, trend in zip(axes[0], trends, strict=True):
        values = [r for r in rows if r["kind"] == "value" and r["param"] == trend["param"]]
        errors = [[max(0.0, r["acc"] - r["ci"][0]) for r in values], [max(0.0, r["ci"][1] - r["acc"]) for r in values]]
        ax.errorbar(range(len(values)), [r["acc"] for r in values], yerr=errors, marker="o", capsize=2,
                    color="tab:purple")
        ax.set_xticks(range(len(values)), [_short(r["value"]) for r in values], fontsize=7,
                      rotation=45 if len(values) > 5 else 0)
        rho = "" if trend["spearman"] is None else f"\nSpearman {trend['spearman']:+.2f}"
        ax.set_title(f"{trend['param']}{rho}", fontsize=9)
        ax.set_ylim(-0.02, 1.05)
    axes[0][0].set_ylabel("accuracy (Wilson 95 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
