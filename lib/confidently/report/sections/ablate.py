"""ablate: missingness-bias curves per model, fill and order; top-k tests; LIME consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.missingness import summarize_consistency, summarize_curves, summarize_topk
from confidently.missingness.plots import plot_summaries
from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt

PER_IMAGE = {"ablate-curve/v1": summarize_curves, "ablate-topk/v1": summarize_topk,
             "ablate-consistency/v1": summarize_consistency}
SUMMARIES = ("ablate-curve-summary/v1", "ablate-topk-summary/v1", "ablate-consistency-summary/v1")


LIME = "ablate-lime/v1"


def _claims(record: dict[str, Any]) -> bool:
    result = record.get("ablate")
    return (isinstance(result, dict) and result.get("schema") in (*PER_IMAGE, LIME)) \
        or record.get("schema") in SUMMARIES


def _lime_heatmaps(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    """The top LIME scores of a few patch-unit explanations on their patch grid, over the image when it can
    be read from here (image paths are relative to where `ablate` ran)."""
    import math

    import numpy as np

    from confidently.report.sections import new_figure, readable_image, save

    chosen = []
    for record in records:
        result = record["ablate"]
        side = math.isqrt(int(result.get("features") or 0))
        if result.get("unit") == "patch" and side > 0 and side * side == result["features"]:
            chosen.append((record, result, side))
        if len(chosen) == 6:
            break
    if not chosen:
        return []
    figure, axes = new_figure(panels=len(chosen), width=2.1, height=2.9)
    for axis, (record, result, side) in zip(axes, chosen, strict=True):
        heat = np.zeros(side * side)
        heat[result["ranking_top"]] = result["score_top"]
        heat = heat.reshape(side, side)
        limit = float(np.abs(heat).max()) or 1.0
        image = readable_image(record.get("image"))
        if image is not None:
            axis.imshow(image, extent=(0, side, side, 0))
        axis.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.55 if image is not None else 1.0,
                    extent=(0, side, side, 0), interpolation="nearest")
        axis.set_title(f"{record.get('id', '')}: pred {result.get('pred0')}", fontsize=8)
        axis.axis("off")
    return [Block("LIME explanations", "top-20 feature scores on the patch grid (red supports the prediction, "
                  "blue opposes it)", image=save(figure, folder, "lime-heatmaps.png"))]


def _label(result: dict[str, Any]) -> str:
    model = Path(str(result.get("model") or (result.get("config") or {}).get("model_path") or "model")).stem
    parts = [model, result.get("fill")]
    if "order" in result:
        parts.append(f"{result['order']} order")
    return ", ".join(str(p) for p in parts if p)


def _fields(record: dict[str, Any]) -> dict[str, str]:
    if record.get("schema") not in SUMMARIES:
        return {"ablate.ks": "list?", "ablate.ks.*": "integer"}
    spec = {"n": "integer", "ks": "list", "ks.*": "integer"}
    if record["schema"] == "ablate-curve-summary/v1":
        spec.update({"frac_unchanged": "list", "frac_unchanged.*": "number", "class_entropy_norm": "list",
                     "class_entropy_norm.*": "number", "auc_unchanged": "number?"})
    return spec


@register_section("ablate", "ablate — missingness bias, LIME and the top-k test", _claims, _fields)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    summaries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    lime = [r for r in records if isinstance(r.get("ablate"), dict) and r["ablate"].get("schema") == LIME]
    records = [r for r in records if r not in lime]
    for record in records:
        if record.get("schema") in SUMMARIES:
            summaries.setdefault(record["schema"], []).append((_label(record), record))
        else:
            result = record["ablate"]
            groups.setdefault((result["schema"], _label(result)), []).append(result)
    for (schema, label), results in groups.items():
        summary = PER_IMAGE[schema](results)
        summary.setdefault("fill", results[0].get("fill"))
        summaries.setdefault(summary["schema"], []).append((label, summary))
    blocks = []
    titles = {"ablate-curve-summary/v1": ("Missingness-bias curves", "fraction of predictions unchanged and class "
                                          "entropy as features are removed"),
              "ablate-topk-summary/v1": ("Top-k test", "remove each explanation's top-k features: the faster the "
                                         "prediction flips, the more faithful the explanation"),
              "ablate-consistency-summary/v1": ("LIME consistency across baseline colours", "Jaccard of top-k sets "
                                                "over colour pairs; dashed: random rankings")}
    for index, (schema, items) in enumerate(sorted(summaries.items())):
        name = f"{schema.split('/')[0]}-{index}.png"
        plot_summaries([s for _, s in items], [label for label, _ in items], folder / name, titles[schema][0])
        blocks.append(Block(titles[schema][0], titles[schema][1], image=name))
        if schema == "ablate-curve-summary/v1":
            middle = [min(range(len(s["ks"])), key=lambda j, s=s: abs(s["ks"][j] - s["ks"][-1] / 4)) for _, s in items]
            blocks.append(Block("Curves at a quarter of the features removed", columns=[
                "curve", "n", "k", "unchanged", "class entropy / max", "AUC unchanged"], rows=[
                [label, s["n"], s["ks"][j], fmt(s["frac_unchanged"][j]), fmt(s["class_entropy_norm"][j]),
                 fmt(s["auc_unchanged"])] for (label, s), j in zip(items, middle, strict=True)]))
    return blocks + _lime_heatmaps(lime, folder)
