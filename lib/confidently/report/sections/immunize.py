"""immunize: how similar the edits of immunized photos are to the edits of the clean ones, per method
(and per transformation of the immunized photo), metric by metric — lower similarity, better protection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, readable_image, save

BASE = ("kind", "transform", "ref", "test", "n", "missing", "features", "skipped", "notes", "tool_version")


def _claims(record: dict[str, Any]) -> bool:
    return record.get("kind") in ("immunize.summary", "immunize.scored")


def _group_keys(summary: dict[str, Any], metric_names: set[str]) -> list[str]:
    return [k for k in summary if k not in BASE and k not in metric_names]


def _label(summary: dict[str, Any], groups: list[str]) -> str:
    parts = [str(summary.get(g)) for g in groups]
    if summary.get("transform"):
        parts.append(summary["transform"])
    return " · ".join(parts) or "all"


def _from_scored(scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Summaries recomputed from per-record scores (when the summary records were not kept), by method."""
    from confidently.immunize.metrics import mean_std

    cells: dict[tuple[Any, str | None], list[dict[str, Any]]] = {}
    for record in scored:
        method = record.get("method")
        cells.setdefault((method, None), []).append(record.get("metrics") or {})
        for variant, values in (record.get("metrics_transformed") or {}).items():
            cells.setdefault((method, variant), []).append(values)
    out = []
    for (method, variant), rows in cells.items():
        names = list(dict.fromkeys(name for row in rows for name in row))
        out.append({"kind": "immunize.summary", "method": method, "transform": variant, "n": len(rows),
                    **{name: mean_std(row.get(name) for row in rows) for name in names}, "skipped": {}})
    return out


def _fields(record: dict[str, Any]) -> dict[str, str]:
    if record.get("kind") == "immunize.scored":
        return {"metrics": "object", "metrics.*": "number?", "metrics_transformed": "object?",
                "metrics_transformed.*": "object", "metrics_transformed.*.*": "number?"}
    from confidently.immunize.metrics import PAIR_METRICS, list_metrics

    pair = [name for name in list_metrics() if name in PAIR_METRICS]
    return {"n": "integer", **{name: "object?" for name in pair},
            **{f"{name}.{stat}": "number" for name in pair for stat in ("mean", "std")}}


@register_section("immunize", "immunize — do edits of immunized photos differ from edits of the clean ones?",
                  _claims, _fields)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    from confidently.immunize.metrics import PAIR_METRICS, SET_METRICS, list_metrics

    summaries = [r for r in records if r["kind"] == "immunize.summary"]
    if not summaries:
        summaries = _from_scored([r for r in records if r["kind"] == "immunize.scored"])
    set_fields = [f for name in SET_METRICS for f in SET_METRICS.get(name).fields]
    known = set(list_metrics()) | set(set_fields)
    groups = list(dict.fromkeys(k for s in summaries for k in _group_keys(s, known)))
    pair = [m for m in list_metrics() if m in PAIR_METRICS and any(isinstance(s.get(m), dict) for s in summaries)]
    sets = [f for f in set_fields if any(s.get(f) is not None for s in summaries)]
    labels = [_label(s, groups) for s in summaries]
    blocks = []
    if pair:
        blocks.append(Block("Similarity of edit(immunized) to edit(clean)",
                            "bars: mean over images, whiskers: ±1 std; ↑ the metric grows with similarity, ↓ it "
                            "shrinks, so a stronger immunization moves the bar against the arrow; hatched bars: the "
                            "immunized photo was transformed before editing",
                            image=_bars(summaries, labels, pair, folder)))
    columns = [*(groups or ["group"]), "transform", "n", *pair, *sets]
    rows = [[*([fmt(s.get(g)) for g in groups] or ["all"]), s.get("transform") or "–", s["n"],
             *(_mean_std(s.get(m)) for m in pair), *(fmt(s.get(f)) for f in sets)] for s in summaries]
    skipped = sorted({f"{name}: {reason}" for s in summaries for name, reason in (s.get("skipped") or {}).items()
                      if s["n"]})
    features = sorted({s["features"] for s in summaries if s.get("features")})
    caption = "; ".join([*(f"set-level metrics on {f} features" for f in features), *skipped])
    blocks.append(Block("Scores per method and transform", caption, columns=columns, rows=rows))
    return blocks + _grids([r for r in records if r["kind"] == "immunize.scored"], folder)


GRID_FIELDS = (("image", "photo"), ("immunized", "immunized"), ("edit_clean", "edit(photo)"),
               ("edit_immunized", "edit(immunized)"))


def _grids(scored: list[dict[str, Any]], folder: Path) -> list[Block]:
    """Photo, immunized photo and both edits side by side, for a few records whose files can be read here."""
    rows = []
    for record in scored:
        pictures = [readable_image(record.get(field)) for field, _ in GRID_FIELDS]
        if sum(p is not None for p in pictures) >= 2:
            rows.append((record, pictures))
        if len(rows) == 4:
            break
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(GRID_FIELDS), figsize=(6.4, 1.7 * len(rows) + 1.2), squeeze=False)
    for i, (record, pictures) in enumerate(rows):
        for j, picture in enumerate(pictures):
            axis = axes[i][j]
            axis.axis("off")
            if picture is not None:
                axis.imshow(picture)
            if i == 0:
                axis.set_title(GRID_FIELDS[j][1], fontsize=8)
        axes[i][0].text(-0.1, 0.5, f"{record.get('method', '')} {record.get('id', '')}", fontsize=7, rotation=90,
                        transform=axes[i][0].transAxes, ha="right", va="center")
    return [Block("Photos and their edits", "same prompt, mask and seed for both edits; the immunized photo "
                  "looks like the original, its edit should not look like the original's edit",
                  image=save(figure, folder, "grids.png"))]


def _mean_std(stats: dict[str, Any] | None) -> str:
    return "–" if not stats else f"{fmt(stats['mean'])} ± {fmt(stats['std'])}"


def _bars(summaries: list[dict[str, Any]], labels: list[str], metrics: list[str], folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from confidently.immunize.metrics import PAIR_METRICS

    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(max(5.2, 1.0 + 0.55 * len(summaries)) * columns,
                                                        3.2 * rows), squeeze=False)
    methods = list(dict.fromkeys(label.split(" · ")[0] for label in labels))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for axis, name in zip(axes.flat, metrics, strict=False):
        metric = PAIR_METRICS.get(name)
        stats = [s.get(name) or {} for s in summaries]
        for x, (summary, stat, label) in enumerate(zip(summaries, stats, labels, strict=True)):
            if not stat:
                continue
            axis.bar(x, stat["mean"], yerr=stat["std"], capsize=3, color=colours[label.split(" · ")[0]],
                     hatch="//" if summary.get("transform") else None, edgecolor="white")
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        axis.set_title(f"{metric.title} {'↑' if metric.higher_is_similar else '↓'}", fontsize=10)
        if metric.higher_is_similar and all(0 <= (s.get("mean") or 0) <= 1.05 for s in stats):  # not PSNR, GMSD
            axis.set_ylim(0, 1.05)
    for axis in list(axes.flat)[len(metrics):]:
        axis.set_visible(False)
    return save(figure, folder, "similarity.png")
