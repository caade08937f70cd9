"""ablate: missingness-bias curves per model, fill and order; top-k tests; LIME consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.missingness import summarize_consistency, summarize_curves, summarize_topk
from confidently.missingness.plots import plot_summaries
from confidently.report.sections import fmt
from confidently.report.site import Block, register_section

PER_IMAGE = {"ablate-curve/v1": summarize_curves, "ablate-topk/v1": summarize_topk,
             "ablate-consistency/v1": summarize_consistency}
SUMMARIES = ("ablate-curve-summary/v1", "ablate-topk-summary/v1", "ablate-consistency-summary/v1")


def _claims(record: dict[str, Any]) -> bool:
    result = record.get("ablate")
    return (isinstance(result, dict) and result.get("schema") in PER_IMAGE) or record.get("schema") in SUMMARIES


def _label(result: dict[str, Any]) -> str:
    model = Path(str(result.get("model") or (result.get("config") or {}).get("model_path") or "model")).stem
    parts = [model, result.get("fill")]
    if "order" in result:
        parts.append(f"{result['order']} order")
    return ", ".join(str(p) for p in parts if p)


@register_section("ablate", "ablate — missingness bias, LIME and the top-k test", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    summaries: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
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
    return blocks
