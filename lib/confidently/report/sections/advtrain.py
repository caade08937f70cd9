"""advtrain: clean vs robust accuracy against eps (one line per attack, and the worst case over them); transfer
accuracy against the source's eps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "advtrain" and (record.get("kind") == "eval" or (
        record.get("kind") == "summary" and record.get("cmd") == "transfer"))


WORST = "worst case"


def attack_curves(evals: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[tuple[float, float, float]]]]:
    """(model, constraint) → attack → sorted (eps, clean acc, robust acc) points. A record of one attack
    (``attack``, PGD in records that do not say) is one point of its line; a record of several (``by_attack``)
    is a point of each attack's line and of the worst case's (``adv_acc``). Of two records at one eps, the
    later wins."""
    curves: dict[tuple[str, str], dict[str, dict[float, tuple[float, float, float]]]] = {}
    for record in evals:
        group = curves.setdefault((record["model"], str(record.get("constraint"))), {})
        each = {name: values["adv_acc"] for name, values in record.get("by_attack", {}).items()}
        if each:
            each[WORST] = record["adv_acc"]
        else:
            each = {record.get("attack", "pgd"): record["adv_acc"]}
        for attack, accuracy in each.items():
            group.setdefault(attack, {})[record["eps"]] = (record["eps"], record["nat_acc"], accuracy)
    return {key: {attack: sorted(points.values()) for attack, points in sorted(group.items(), key=_line_order)}
            for key, group in sorted(curves.items())}


def _line_order(item: tuple[str, Any]) -> tuple[bool, str]:
    return item[0] == WORST, item[0]  # the worst case last


@register_section("advtrain", "advtrain — robustness and robust transfer", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    blocks = []
    evals = [r for r in records if r["kind"] == "eval"]
    if evals:
        figure, (axis,) = new_figure()
        rows = []
        for (model, constraint), curves in attack_curves(evals).items():
            name = f"{Path(model).stem} ({constraint})"
            for index, (attack, points) in enumerate(curves.items()):
                axis.plot([p[0] for p in points], [p[2] for p in points], marker="o",
                          linestyle="--" if attack == WORST else "-", label=f"{name} {attack}")
                if index == 0:
                    axis.axhline(points[0][1], linestyle=":", color=axis.lines[-1].get_color(),
                                 label=f"{name} clean")
                rows += [[name, attack, p[0], fmt(p[1]), fmt(p[2])] for p in points]
        axis.set(xlabel="eps", ylabel="accuracy", ylim=(-0.02, 1.02))
        axis.legend(fontsize=8)
        blocks += [Block("Accuracy under attack", "robust accuracy against the attack radius, one line per attack "
                         f"(dashed, {WORST}: a point counts only if no attack broke it); dotted: clean",
                         image=save(figure, folder, "robustness.png")),
                   Block("Robustness", columns=["model", "attack", "eps", "clean acc", "robust acc"], rows=rows)]
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
