"""advtrain: clean vs robust accuracy against eps; transfer accuracy against the source's eps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "advtrain" and (record.get("kind") == "eval" or (
        record.get("kind") == "summary" and record.get("cmd") == "transfer"))


@register_section("advtrain", "advtrain — robustness and robust transfer", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    blocks = []
    evals = [r for r in records if r["kind"] == "eval"]
    if evals:
        figure, (axis,) = new_figure()
        rows = []
        for model in sorted({(r["model"], r.get("constraint")) for r in evals}):
            points = sorted((r["eps"], r["nat_acc"], r["adv_acc"]) for r in evals
                            if (r["model"], r.get("constraint")) == model)
            name = f"{Path(model[0]).stem} ({model[1]})"
            axis.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=f"{name} robust")
            axis.axhline(points[0][1], linestyle=":", color=axis.lines[-1].get_color(), label=f"{name} clean")
            rows += [[name, p[0], fmt(p[1]), fmt(p[2])] for p in points]
        axis.set(xlabel="eps", ylabel="accuracy", ylim=(-0.02, 1.02))
        axis.legend(fontsize=8)
        blocks += [Block("Accuracy under PGD attack", "robust accuracy against the attack radius; dotted: clean",
                         image=save(figure, folder, "robustness.png")),
                   Block("Robustness", columns=["model", "eps", "clean acc", "robust acc"], rows=rows)]
    transfers = [r for r in records if r["kind"] == "summary" and r.get("top1") is not None]
    if transfers:
        figure, (axis,) = new_figure()
        for mode in sorted({r["mode"] for r in transfers}):
            points = sorted((r.get("source_eps") or 0.0, r["top1"]) for r in transfers if r["mode"] == mode)
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
        axis.set(xlabel="source model eps", ylabel="target accuracy")
        axis.legend(fontsize=8)
        blocks += [Block("Transfer accuracy against the source's robustness", "fixed-feature and full-network",
                         image=save(figure, folder, "transfer.png")),
                   Block("Transfers", columns=["mode", "source eps", "source", "top-1", "mean per class"],
                         rows=[[r["mode"], r.get("source_eps"), Path(r["source"]).name, fmt(r["top1"]),
                                fmt(r.get("mean_per_class"))] for r in transfers])]
    return blocks
