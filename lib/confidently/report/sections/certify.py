"""certify: clean and certified accuracy against patch size; the largest certified patch per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, readable_image, save
from confidently.smoothing import summarize_certificates


def _claims(record: dict[str, Any]) -> bool:
    result = record.get("certify")
    return isinstance(result, dict) and "certified" in result and "max_certified_patch" in result


def _fields(record: dict[str, Any]) -> dict[str, str]:
    return {"certify.max_certified_patch": "integer", "certify.certified": "object", "certify.pred": "integer?",
            "certify.correct": "bool?"}


@register_section("certify", "certify — certified patch robustness", _claims, _fields)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    results = [{**r["certify"], "label": r.get("label")} for r in records]
    summary = summarize_certificates(results)
    sizes = sorted(summary.get("certified_acc", {}), key=int)
    figure, (left, right) = new_figure(2)
    if sizes:
        left.plot([int(m) for m in sizes], [summary["certified_acc"][m] for m in sizes], marker="o",
                  label="certified accuracy")
    for key, style in (("clean_acc", "--"), ("base_acc", ":")):
        if summary.get(key) is not None:
            left.axhline(summary[key], linestyle=style, color="grey", label=key.replace("_", " "))
    left.set(xlabel="patch side m (pixels)", ylabel="accuracy", ylim=(-0.02, 1.02))
    left.legend(fontsize=8)
    largest = [r["max_certified_patch"] for r in results]
    right.hist(largest, bins=range(0, max(largest) + 2), align="left", rwidth=0.85)
    right.set(xlabel="largest certified patch side", ylabel="images")
    image = save(figure, folder, "certified.png")
    rows = [["images", summary.get("n")], ["clean (smoothed) accuracy", fmt(summary.get("clean_acc"))],
            ["base model accuracy", fmt(summary.get("base_acc"))]]
    rows += [[f"certified accuracy, {m}×{m} patch", fmt(summary["certified_acc"][m])] for m in sizes]
    return [Block("Certified accuracy against patch size", "certified accuracy never shown without clean and "
                  "base accuracy", image=image),
            Block("Summary", columns=["metric", "value"], rows=rows), *_vote_examples(records, folder)]


def _vote_examples(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    """A few images with the ablation votes behind their smoothed prediction (images readable from here)."""
    chosen = [(r, image) for r in records if (image := readable_image(r.get("image"))) is not None][:4]
    if not chosen:
        return []
    figure, axes = new_figure(panels=2 * len(chosen), width=1.9, height=2.9)
    for i, (record, image) in enumerate(chosen):
        result = record["certify"]
        picture, votes = axes[2 * i], axes[2 * i + 1]
        picture.imshow(image, cmap="gray" if image.shape[-1] == 1 else None)
        picture.set_title(f"{record.get('id', '')}\nlabel {record.get('label')}, pred {result.get('pred')}",
                          fontsize=8)
        picture.axis("off")
        classes, counts = zip(*result.get("counts_top") or [[None, 0]], strict=True)
        votes.barh([str(c) for c in classes][::-1], list(counts)[::-1], color="tab:blue")
        votes.set_title(f"votes of {result.get('vote', {}).get('total', '?')} ablations", fontsize=8)
        votes.tick_params(labelsize=7)
    return [Block("Ablation votes", "each image, and how its ablated copies voted: the certificate needs the top "
                  "class to win by more than twice the votes a patch can touch", image=save(figure, folder,
                                                                                           "votes.png"))]
