"""plant-backdoor: attack success rate per source, transfer mode and weight decay, with the spread over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.backdoor.experiment import summarize_runs
from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "plant-backdoor" and record.get("kind") in ("run", "bias")


@register_section("plant-backdoor", "plant-backdoor — does a planted bias survive transfer?", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    blocks = []
    runs = [r for r in records if r["kind"] == "run"]
    if runs:
        settings = summarize_runs(runs)["settings"]
        figure, (axis,) = new_figure(width=6.5, height=max(3.0, 0.32 * len(settings) + 1.2))
        labels = [f"source {s['source_rate']:g} · {s['mode']} · wd {s['wd']:g}"
                  + (f" · de-bias {s['debias_rate']:g}" if s["debias_rate"] else "") for s in settings]
        means = [s["asr"]["mean"] or 0.0 for s in settings]
        spreads = [s["asr"]["std"] or 0.0 for s in settings]
        colours = ["tab:red" if s["source_rate"] > 0 else "tab:blue" for s in settings]
        axis.barh(range(len(settings)), means, xerr=spreads, color=colours, capsize=3)
        axis.set_yticks(range(len(settings)), labels, fontsize=8)
        axis.invert_yaxis()
        axis.set(xlabel="target attack success rate", xlim=(0, 1.02))
        blocks += [Block("Attack success rate after transfer", "red: poisoned source, blue: clean; bars are the "
                         "mean over seeds, whiskers one standard deviation", image=save(figure, folder, "asr.png")),
                   Block("Bias transfer", columns=["source rate", "mode", "wd", "de-bias", "seeds", "ASR",
                                                   "clean acc", "Δacc"],
                         rows=[[s["source_rate"], s["mode"], s["wd"], s["debias_rate"], s["n"],
                                f"{fmt(s['asr']['mean'])} ± {fmt(s['asr']['std'])}",
                                fmt(s["target_clean_acc"]["mean"]), fmt(s["delta_acc"]["mean"])] for s in settings])]
    biases = [r for r in records if r["kind"] == "bias"]
    if biases:
        blocks.append(Block("Trigger sensitivity per model", columns=["model", "n", "clean acc", "triggered acc",
                                                                       "ASR", "targeted ASR"],
                            rows=[[Path(r["model"]).name, r["n"], fmt(r["clean_acc"]), fmt(r["triggered_acc"]),
                                   fmt(r["asr"]), fmt(r.get("asr_targeted"))] for r in biases]))
    return blocks
