"""The thesis' analyses of render records (what 3DB's dashboard showed), as rows, tensors and pictures.

A parameter is ``object``, ``environment``, ``label``, a ``render_args`` key (``camera.zoom_factor``)
or an unambiguous suffix of one (``zoom_factor``). Numbers with few distinct values (a grid's) are
grouped exactly; otherwise, or when ``bins`` is given and exceeded, into equal-width bins.

- :func:`accuracy_by`: accuracy per value (or joint values) with counts and Wilson 95 % intervals.
- :func:`heatmap`: mean accuracy over two parameters, optionally sliced at fixed values of others.
- :func:`boxplot`: per ROW value, the distribution over COL values of per-(ROW, COL) accuracies.
- :func:`stability`: fraction of other-parameter settings whose top-1 prediction is constant across PARAM.
- :func:`confusion`: top-1 prediction frequencies per PARAM value.
- :func:`spearman`, :func:`pearson`: the rank and linear correlations the studies report.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from confidently.errors import UsageError

Z95 = 1.959963984540054
EXACT_LIMIT = 24  # at most this many distinct numbers are grouped exactly when no bins are asked for
DEFAULT_BINS = 10
TOP_LEVEL = ("object", "environment", "label")


def wilson(correct: int, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return [low, high]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (what Spearman's r needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r; None when fewer than 3 points or a constant variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (Pearson's r of the tie-averaged ranks)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return pearson(_ranks(x), _ranks(y)) if len(x) >= 3 else None


def judged(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that carry a judgement (``is_correct``); error lines and --no-eval records are skipped."""
    out = [r for r in records if isinstance(r.get("is_correct"), bool)]
    if not out:
        raise UsageError("no judged records (with is_correct): analyze the output of `render-3db run` without "
                         "--no-eval or --dry-run")
    return out


def resolve_param(records: list[dict[str, Any]], name: str) -> str:
    """The full name of a parameter (``zoom_factor`` → ``camera.zoom_factor``); valid names in the error."""
    if name in TOP_LEVEL:
        return name
    keys = list(dict.fromkeys(k for r in records for k in r.get("render_args", {})))
    if name in keys:
        return name
    matches = [k for k in keys if k.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"ambiguous: {', '.join(matches)}" if matches else f"choose {', '.join([*TOP_LEVEL, *keys])}"
    raise UsageError(f"unknown parameter {name!r}; {hint}")


def value_of(record: dict[str, Any], param: str) -> Any:
    if param in TOP_LEVEL:
        return record.get(param)
    return record.get("render_args", {}).get(param)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v is not None


class Grouping:
    """How the values of one parameter are grouped: exactly, or into equal-width bins."""

    def __init__(self, values: list[Any], bins: int | None):
        self.numeric = all(_is_number(v) for v in values)
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v)) if self.numeric else \
            list(dict.fromkeys(map(_key, values)))
        self.binned = self.numeric and len(distinct) > (bins if bins else EXACT_LIMIT)
        if self.binned:
            self.bins = bins or DEFAULT_BINS
            self.low, self.high = float(min(values)), float(max(values))
            width = (self.high - self.low) / self.bins
            self.groups = [(self.low + i * width, self.low + (i + 1) * width) for i in range(self.bins)]
        else:
            self.groups = distinct

    def index(self, value: Any) -> int:
        if self.binned:
            if self.high == self.low:
                return 0
            return min(int((value - self.low) / (self.high - self.low) * self.bins), self.bins - 1)
        return self.groups.index(value if self.numeric else _key(value))

    def label(self, i: int) -> Any:
        if self.binned:
            lo, hi = self.groups[i]
            return (lo + hi) / 2
        return self.groups[i]

    def row(self, i: int) -> dict[str, Any]:
        out = {"value": self.label(i)}
        if self.binned:
            out["bin"] = list(self.groups[i])
        return out


def _key(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _params(records: list[dict[str, Any]], spec: str | list[str]) -> list[str]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    return [resolve_param(records, n.strip()) for n in names if n.strip()]


def accuracy_by(records: list[dict[str, Any]], param: str | list[str], bins: int | None = None) -> list[dict[str, Any]]:
    """Accuracy per value (or per joint value of several comma-separated parameters)."""
    records = judged(records)
    params = _params(records, param)
    groupings = [Grouping([value_of(r, p) for r in records], bins) for p in params]
    cells: dict[tuple[int, ...], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        key = tuple(g.index(value_of(r, p)) for g, p in zip(groupings, params, strict=True))
        cells[key][0] += int(r["is_correct"])
        cells[key][1] += 1
    rows = []
    for key in sorted(cells):
        correct, n = cells[key]
        row: dict[str, Any] = {"analysis": "by", "param": ",".join(params)}
        if len(params) == 1:
            row.update(groupings[0].row(key[0]))
        else:
            row["value"] = [g.label(i) for g, i in zip(groupings, key, strict=True)]
        row.update({"n": n, "correct": correct, "acc": correct / n, "ci": wilson(correct, n)})
        rows.append(row)
    return rows


def overall(records: list[dict[str, Any]]) -> dict[str, Any]:
    records = judged(records)
    correct = sum(int(r["is_correct"]) for r in records)
    return {"analysis": "overall", "n": len(records), "correct": correct, "acc": correct / len(records),
            "ci": wilson(correct, len(records))}


def _matches(value: Any, wanted: str) -> bool:
    if _is_number(value):
        try:
            target = float(wanted)
        except ValueError:
            return False
        return math.isclose(float(value), target, rel_tol=1e-6, abs_tol=1e-9)
    return str(value) == wanted


def slice_records(records: list[dict[str, Any]], fix: dict[str, str]) -> list[dict[str, Any]]:
    """Records whose parameters equal the fixed values (``--fix camera.zoom_factor=1``)."""
    out = records
    for name, wanted in fix.items():
        param = resolve_param(records, name)
        out = [r for r in out if _matches(value_of(r, param), wanted)]
        if not out:
            values = sorted({str(value_of(r, param)) for r in records})[:12]
            raise UsageError(f"--fix {name}={wanted}: no record has that value (values: {', '.join(values)})")
    return out


def heatmap(records: list[dict[str, Any]], params: str | list[str], fix: dict[str, str] | None = None,
            bins: int | None = None) -> dict[str, Any]:
    """Mean accuracy over two parameters: ``acc`` and ``n`` matrices (rows = first parameter), axis values."""
    records = slice_records(judged(records), fix or {})
    names = _params(records, params)
    if len(names) != 2:
        raise UsageError(f"heatmap needs two parameters P1,P2, got {params!r}")
    gx, gy = (Grouping([value_of(r, p) for r in records], bins) for p in names)
    correct = np.zeros((len(gx.groups), len(gy.groups)))
    count = np.zeros_like(correct)
    for r in records:
        i, j = gx.index(value_of(r, names[0])), gy.index(value_of(r, names[1]))
        correct[i, j] += int(r["is_correct"])
        count[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    rows = [{"analysis": "heatmap", "params": names, "fix": fix or {}, "x": gx.label(i), "y": gy.label(j),
             "n": int(count[i, j]), "acc": float(acc[i, j])}
            for i in range(len(gx.groups)) for j in range(len(gy.groups)) if count[i, j] > 0]
    return {"params": names, "fix": fix or {}, "x": [gx.label(i) for i in range(len(gx.groups))],
            "y": [gy.label(j) for j in range(len(gy.groups))], "acc": acc, "n": count, "rows": rows}


def _box(values: list[float]) -> dict[str, Any]:
    data = np.asarray(values, dtype=float)
    q1, median, q3 = (float(np.percentile(data, q)) for q in (25, 50, 75))
    iqr = q3 - q1
    inside = data[(data >= q1 - 1.5 * iqr) & (data <= q3 + 1.5 * iqr)]
    outliers = sorted(float(v) for v in data if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr)
    return {"median": median, "q1": q1, "q3": q3, "whiskers": [float(inside.min()), float(inside.max())],
            "outliers": outliers, "mean": float(data.mean())}


def boxplot(records: list[dict[str, Any]], params: str | list[str], bins: int | None = None) -> list[dict[str, Any]]:
    """Per ROW value: median, quartiles, whiskers and outliers (1.5·IQR) of the per-(ROW, COL) accuracies."""
    records = judged(records)
    names = _params(records, params)
    if len(names) != 2:
        raise UsageError(f"boxplot needs ROW,COL, got {params!r}")
    grid = heatmap(records, names, bins=bins)
    rows = []
    for i, row_value in enumerate(grid["x"]):
        accs = {grid["y"][j]: float(grid["acc"][i, j]) for j in range(len(grid["y"])) if grid["n"][i, j] > 0}
        if accs:
            rows.append({"analysis": "boxplot", "row": names[0], "col": names[1], "value": row_value,
                         "groups": len(accs), **_box(list(accs.values())),
                         "by_col": [{"col": k, "acc": v} for k, v in accs.items()]})
    return rows


def _top1(record: dict[str, Any]) -> Any:
    prediction = record.get("prediction")
    return prediction[0] if isinstance(prediction, list) and prediction else prediction


def stability(records: list[dict[str, Any]], param: str) -> dict[str, Any]:
    """Among settings of everything else that see ≥ 2 values of PARAM, the fraction whose top-1 prediction
    never changes across those values (the thesis' liquid study: 20.7 %)."""
    records = judged(records)
    name = resolve_param(records, param)
    groups: dict[tuple, dict[Any, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        others = tuple(sorted((k, repr(v)) for k, v in r.get("render_args", {}).items() if k != name))
        key = (r.get("object"), r.get("environment"), others) if name not in TOP_LEVEL else others
        groups[key][repr(value_of(r, name))].add(repr(_top1(r)))
    varied = [g for g in groups.values() if len(g) >= 2]
    stable = sum(1 for g in varied if len(set().union(*g.values())) == 1)
    return {"analysis": "stability", "param": name, "settings": len(varied), "stable": stable,
            "fraction": stable / len(varied) if varied else None}


def confusion(records: list[dict[str, Any]], param: str, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Top-1 prediction counts per PARAM value, most frequent first."""
    records = judged(records)
    name = resolve_param(records, param)
    grouping = Grouping([value_of(r, name) for r in records], None)
    counts: dict[int, Counter] = defaultdict(Counter)
    for r in records:
        counts[grouping.index(value_of(r, name))][_top1(r)] += 1
    rows = []
    for i in sorted(counts):
        total = sum(counts[i].values())
        predictions = [{"class": c, **({"name": names[c]} if names and isinstance(c, int) and c < len(names) else {}),
                        "n": k, "frac": k / total} for c, k in counts[i].most_common()]
        rows.append({"analysis": "confusion", "param": name, **grouping.row(i), "n": total,
                     "predictions": predictions})
    return rows


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plot_by(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_short(r["value"]) if not isinstance(r["value"], list) else "/".join(map(_short, r["value"]))
              for r in rows]
    acc = np.array([r["acc"] for r in rows])
    err = np.array([[max(0.0, r["acc"] - r["ci"][0]), max(0.0, r["ci"][1] - r["acc"])] for r in rows]).T
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(rows) + 2), 3.2))
    ax.bar(range(len(rows)), acc, yerr=err, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(rows)), labels, rotation=45 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else
                  "center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (Wilson 95 %)")
    ax.set_xlabel(rows[0]["param"] if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(grid: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = np.asarray(grid["acc"], dtype=float)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.4 * len(grid["y"]) + 2.5), max(3, 0.35 * len(grid["x"]) + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(acc), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(grid["x"])), [_short(v) for v in grid["x"]], fontsize=8)
    ax.set_xticks(range(len(grid["y"])), [_short(v) for v in grid["y"]], fontsize=8,
                  rotation=45 if len(grid["y"]) > 6 else 0)
    ax.set_ylabel(grid["params"][0])
    ax.set_xlabel(grid["params"][1])
    if grid["fix"]:
        ax.set_title(", ".join(f"{k}={v}" for k, v in grid["fix"].items()), fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_boxplot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = [{"label": _short(r["value"]), "med": r["median"], "q1": r["q1"], "q3": r["q3"],
              "whislo": r["whiskers"][0], "whishi": r["whiskers"][1], "fliers": r["outliers"]} for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(rows) + 2), 3.2))
    ax.bxp(stats, showfliers=True)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(f"accuracy per {rows[0]['col']}" if rows else "accuracy")
    ax.set_xlabel(rows[0]["row"] if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
