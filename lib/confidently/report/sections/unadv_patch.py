"""unadv-patch: accuracy per arm (no patch, random, unadversarial, baselines) clean and under each corruption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.sections import fmt, new_figure, save
from confidently.report.site import Block, register_section


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "unadv-patch" and record.get("cmd") == "eval"


@register_section("unadv-patch", "unadv-patch — patches that make objects easy to recognise", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    arms = list(dict.fromkeys(r["arm"] for r in records))
    corruptions = list(dict.fromkeys(r["corruption"] for r in records))

    def mean(arm: str, corruption: str) -> float:
        rows = [r for r in records if r["arm"] == arm and r["corruption"] == corruption]
        return sum(r["acc"] for r in rows) / len(rows) if rows else float("nan")

    figure, (axis,) = new_figure(width=max(5.2, 1.1 * len(corruptions) + 2))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        axis.bar([c + i * width for c in range(len(corruptions))], [mean(arm, c) for c in corruptions], width,
                 label=arm)
    axis.set_xticks([c + 0.4 - width / 2 for c in range(len(corruptions))], corruptions, fontsize=8)
    axis.set(ylabel="accuracy (mean over severities)", ylim=(0, 1.02))
    axis.legend(fontsize=8)
    return [Block("Accuracy with and without patches", "corruptions act on the patched image; every arm sees the "
                  "same placements", image=save(figure, folder, "accuracy.png")),
            Block("Accuracy per arm", columns=["arm", *corruptions],
                  rows=[[arm, *(fmt(mean(arm, c)) for c in corruptions)] for arm in arms])]
