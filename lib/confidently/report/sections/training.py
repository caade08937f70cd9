"""Training curves from any trainer's per-epoch metric records (``advtrain train`` and ``transfer``, ``certify
fit``'s stages, ``ablate fit``: the fit flow's shape, :mod:`confidently.fit`): loss and learning rate per epoch,
and clean / adversarial accuracy per epoch on the training batches and the validation data; one figure per run.

A run is one model file (``out``) and stage of one command; records without ``out`` (older ones) are told apart
by tool, command and stage, and a run that starts again at an earlier epoch (a retraining written after the
first) is a new run. A resumed run's records continue its epochs, so the two files of a stopped and a resumed
run draw one curve.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save

# (field, label, colour, line style): what the accuracy panel draws, where the records have it
ACCURACIES = [("train_nat_acc", "train, clean", "tab:blue", "-"), ("train_adv_acc", "train, adversarial", "tab:blue",
                                                                    "--"),
              ("val_nat_acc", "val, clean", "tab:orange", "-"), ("val_adv_acc", "val, adversarial", "tab:orange",
                                                                 "--")]


def _claims(record: dict[str, Any]) -> bool:
    return record.get("kind") == "metric" and "epoch" in record and "loss" in record


def _fields(record: dict[str, Any]) -> dict[str, str]:
    return {"epoch": "integer", "loss": "number", "lr": "number?", "epochs": "integer?", "stage": "string?",
            "out": "string?", "train_acc": "number?", "val_acc": "number?",
            **{name: "number?" for name, *_ in ACCURACIES}}


def runs(records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The records grouped into runs, in the order they first appear: (label, epoch records)."""
    found: list[tuple[tuple, list[dict[str, Any]]]] = []
    open_runs: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = (record.get("tool"), record.get("cmd"), record.get("out"), record.get("stage"))
        epochs = open_runs.get(key)
        if epochs is None or record["epoch"] <= epochs[-1]["epoch"]:
            epochs = open_runs[key] = []
            found.append((key, epochs))
        epochs.append(record)
    labelled, seen = [], {}
    for (tool, cmd, out, stage), epochs in found:
        label = " · ".join(str(part) for part in (Path(out).name if out else " ".join(filter(None, (tool, cmd))),
                                                  stage) if part)
        seen[label] = seen.get(label, 0) + 1
        labelled.append((label + (f" (run {seen[label]})" if seen[label] > 1 else ""), epochs))
    return labelled


def _accuracy(record: dict[str, Any], name: str) -> float | None:
    """A record's accuracy ``name``, reading the older names where the uniform one is missing."""
    if name in record:
        return record[name]
    if name == "val_nat_acc":
        return record.get("val_acc")
    return None


def _subtitle(record: dict[str, Any]) -> str:
    command = " ".join(str(part) for part in (record.get("tool"), record.get("cmd")) if part)
    eps, constraint = record.get("eps"), record.get("constraint")
    if isinstance(eps, (int, float)) and eps:
        command += f", {constraint} eps {eps:g}" if constraint else f", eps {eps:g}"
    return command


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "run"


def _draw_run(label: str, epochs: list[dict[str, Any]], folder: Path, index: int) -> str:
    figure, (losses, accuracies) = new_figure(2)
    steps = [r["epoch"] for r in epochs]
    losses.plot(steps, [r["loss"] for r in epochs], marker="o", markersize=3, color="tab:blue", label="train loss")
    losses.set(xlabel="epoch", ylabel="loss")
    rates = [(r["epoch"], r["lr"]) for r in epochs if isinstance(r.get("lr"), (int, float))]
    if rates:
        twin = losses.twinx()
        twin.plot([e for e, _ in rates], [v for _, v in rates], color="grey", linestyle=":", marker="x",
                  markersize=3, label="learning rate")
        twin.set_ylabel("learning rate", color="grey")
        twin.tick_params(axis="y", colors="grey", labelsize=7)
        handles = losses.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        losses.legend(handles, [h.get_label() for h in handles], fontsize=8)
    else:
        losses.legend(fontsize=8)
    drawn = False
    for name, what, colour, style in ACCURACIES:
        points = [(r["epoch"], value) for r in epochs if isinstance(value := _accuracy(r, name), (int, float))]
        if points:
            accuracies.plot(*zip(*points, strict=True), marker="o", markersize=3, color=colour, linestyle=style,
                            label=what)
            drawn = True
    if not any(name in r for r in epochs for name in ("train_nat_acc", "train_adv_acc")):
        points = [(r["epoch"], r["train_acc"]) for r in epochs if isinstance(r.get("train_acc"), (int, float))]
        if points:  # trained on perturbed batches (ablations, removed patches): accuracy on them as trained
            accuracies.plot(*zip(*points, strict=True), marker="o", markersize=3, color="tab:green",
                            label="train, as trained")
            drawn = True
    accuracies.set(xlabel="epoch", ylabel="accuracy", ylim=(-0.02, 1.02))
    if drawn:
        accuracies.legend(fontsize=8)
    for axis in (losses, accuracies):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(f"{label} — {_subtitle(epochs[-1])}", fontsize=10)
    return save(figure, folder, f"curves-{index}-{_slug(label)}.png")


def _last(epochs: list[dict[str, Any]], name: str) -> float | None:
    return next((value for r in reversed(epochs) if (value := _accuracy(r, name)) is not None), None)


@register_section("training", "training — loss and accuracy per epoch", _claims, _fields)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    blocks, rows = [], []
    for index, (label, epochs) in enumerate(runs(records), start=1):
        image = _draw_run(label, epochs, folder, index)
        blocks.append(Block(f"Training curves: {label}", f"{_subtitle(epochs[-1])}; epochs "
                            f"{epochs[0]['epoch']}–{epochs[-1]['epoch']}; solid: clean, dashed: adversarial; "
                            "dotted: the learning rate", image=image))
        last = epochs[-1]
        train = _last(epochs, "train_nat_acc")
        rows.append([label, _subtitle(last), f"{last['epoch']}" + (f"/{last['epochs']}" if last.get("epochs") else ""),
                     fmt(last["loss"]), fmt(train if train is not None else last.get("train_acc")),
                     fmt(_last(epochs, "train_adv_acc")), fmt(_last(epochs, "val_nat_acc")),
                     fmt(_last(epochs, "val_adv_acc"))])
    blocks.append(Block("Last epoch of each run", "accuracies as last measured (validation runs every "
                        "--eval-every epochs where a command has it)",
                        columns=["run", "command", "epoch", "train loss", "train acc", "train adv acc", "val acc",
                                 "val adv acc"], rows=rows))
    return blocks
