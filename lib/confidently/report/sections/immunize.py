"""immunize: how similar the edits of immunized photos are to the edits of the clean ones, per method
(and per transformation of the immunized photo), metric by metric — lower similarity, better protection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, readable_image, save

BASE = ("kind", "transform", "ref", "test", "n", "missing", "features", "skipped", "notes", "tool_version",
        "tool", "clip_model", "clip_ref", "clip_test")
METHOD_ORDER = ("random", "encoder", "diffusion")  # Table 4.1's rows: the baseline, then weakest to strongest
NOT_COMPUTED = "n/a"


def method_rank(method: Any) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


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
    summaries = sorted(summaries, key=lambda s: method_rank(s.get("method")))  # stable: transforms keep order
    set_fields = [f for name in SET_METRICS for f in SET_METRICS.get(name).fields]
    known = set(list_metrics()) | set(set_fields)
    groups = list(dict.fromkeys(k for s in summaries for k in _group_keys(s, known)))
    pair = [m for m in list_metrics() if m in PAIR_METRICS and any(isinstance(s.get(m), dict) for s in summaries)]
    labels = [_label(s, groups) for s in summaries]
    blocks = []
    if pair:
        blocks.append(Block("Similarity of edit(immunized) to edit(clean)",
                            "bars: mean over images, whiskers: ±1 std; ↑ the metric grows with similarity, ↓ it "
                            "shrinks, so a stronger immunization moves the bar against the arrow; hatched bars: the "
                            "immunized photo was transformed before editing",
                            image=_bars(summaries, labels, pair, folder)))
    # Table 4.1's layout: one row per method (random < encoder < diffusion) and transform, mean ± std; a metric
    # some rows computed and others did not says n/a there
    computed = [m for m in list_metrics() if m in PAIR_METRICS and any(m in s for s in summaries)]
    sets = [f for f in set_fields if any(f in s for s in summaries)]
    clip = [k for k in ("clip_ref", "clip_test") if any(k in s for s in summaries)]
    columns = [*(groups or ["group"]), "transform", "n", *computed, *sets,
               *(f"CLIP {'edit(photo)' if k == 'clip_ref' else 'edit(immunized)'}" for k in clip)]
    rows = [[*([fmt(s.get(g)) for g in groups] or ["all"]), s.get("transform") or "–", s["n"],
             *(_mean_std(s.get(m)) for m in computed),
             *(NOT_COMPUTED if s.get(f) is None else fmt(s.get(f)) for f in sets),
             *(_mean_std(s.get(k)) for k in clip)] for s in summaries]
    skipped = sorted({f"{name}: {reason}" for s in summaries for name, reason in (s.get("skipped") or {}).items()
                      if s["n"]})
    features = sorted({s["features"] for s in summaries if s.get("features")})
    caption = "; ".join([*(f"set-level metrics on {f} features" for f in features), *skipped])
    caption = "; ".join([f"as the thesis's Table 4.1: mean ± std over the images; {NOT_COMPUTED}: not computed",
                         *(f"CLIP: cosine similarity of each edit with its prompt ({m})"
                           for m in sorted({s["clip_model"] for s in summaries if s.get("clip_model")})),
                         *([caption] if caption else [])])
    blocks.append(Block("Scores per method and transform", caption, columns=columns, rows=rows))
    return blocks + _grids([r for r in records if r["kind"] == "immunize.scored"], folder)


GRID_FIELDS = (("image", "photo"), ("mask", "mask"), ("delta", "δ (amplified)"), ("immunized", "immunized"),
               ("edit_clean", "edit(photo)"), ("edit_immunized", "edit(immunized)"))
GRID_PHOTOS = 4


def _amplified_delta(photo, immunized):
    """δ = immunized − photo, stretched so its largest entry spans the whole range (grey = 0); None if unreadable."""
    if photo is None or immunized is None or photo.shape != immunized.shape:
        return None
    delta = immunized.astype("float32") - photo.astype("float32")
    peak = float(abs(delta).max())
    return (0.5 + delta * (0.5 / peak if peak > 0 else 0)).clip(0, 1)


def _attacked(record: dict[str, Any]):
    """The photo as the attack saw it (``x``: cropped and resized to the edit size) and its δ, from the record's
    tensors file when it can be read here; (None, None) otherwise (then δ comes from the two image files)."""
    path = record.get("tensors")
    if not isinstance(path, str) or not Path(path).is_file():
        return None, None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as tensors:
            if not {"x", "delta"} <= set(tensors.keys()):
                return None, None
            photo, delta = tensors.get_tensor("x"), tensors.get_tensor("delta")
    except (OSError, SafetensorError):
        return None, None
    peak = float(delta.abs().max())
    stretched = (0.5 + delta * (0.5 / peak if peak > 0 else 0)).clamp(0, 1)
    return photo.permute(1, 2, 0).numpy(), stretched.permute(1, 2, 0).numpy()


def _pictures(record: dict[str, Any]) -> list:
    immunized = readable_image(record.get("immunized"))
    photo, delta = _attacked(record)
    if photo is None:
        photo = readable_image(record.get("image"))
        delta = _amplified_delta(photo, immunized)
    pictures = {"image": photo, "immunized": immunized, "delta": delta}
    for field in ("mask", "edit_clean", "edit_immunized"):
        pictures[field] = readable_image(record.get(field))
    return [pictures[field] for field, _ in GRID_FIELDS]


def _grids(scored: list[dict[str, Any]], folder: Path) -> list[Block]:
    """As the thesis's Fig. 4.5: per photo (a few whose files can be read here), one row per method (random <
    encoder < diffusion) with the photo, mask, δ amplified, the immunized photo and both edits."""
    by_photo: dict[Any, list[tuple[dict[str, Any], list]]] = {}
    for record in scored:
        pictures = _pictures(record)
        if sum(p is not None for p in pictures) < 2:
            continue
        if record.get("id") not in by_photo and len(by_photo) == GRID_PHOTOS:
            continue
        by_photo.setdefault(record.get("id"), []).append((record, pictures))
    rows = [row for group in by_photo.values()
            for row in sorted(group, key=lambda row: method_rank(row[0].get("method")))]
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(GRID_FIELDS), figsize=(8.4, 1.5 * len(rows) + 1.2), squeeze=False)
    for i, (record, pictures) in enumerate(rows):
        for j, picture in enumerate(pictures):
            axis = axes[i][j]
            axis.axis("off")
            if picture is not None:
                axis.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture,
                            cmap="gray" if picture.shape[-1] == 1 else None, vmin=0, vmax=1)
            else:
                axis.text(0.5, 0.5, NOT_COMPUTED, ha="center", va="center", fontsize=8, color="grey",
                          transform=axis.transAxes)
            if i == 0:
                axis.set_title(GRID_FIELDS[j][1], fontsize=8)
        axes[i][0].text(-0.1, 0.5, f"{record.get('method', '')} {record.get('id', '')}", fontsize=7, rotation=90,
                        transform=axes[i][0].transAxes, ha="right", va="center")
    return [Block("Photos and their edits", "as the thesis's Fig. 4.5, one row per photo and method (random < "
                  "encoder < diffusion): same prompt, mask and seed for both edits; δ is stretched to the full "
                  f"range (grey = 0); the immunized photo looks like the original, its edit should not look like "
                  f"the original's edit; {NOT_COMPUTED}: a file not readable here",
                  image=save(figure, folder, "grids.png"))]


def _mean_std(stats: dict[str, Any] | None) -> str:
    return NOT_COMPUTED if not stats else f"{fmt(stats['mean'])} ± {fmt(stats['std'])}"


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
