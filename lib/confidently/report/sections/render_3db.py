"""render-3db: accuracy per control value, object × environment, a 2-D interaction heatmap, sample renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, readable_image, save


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "render-3db" and isinstance(record.get("is_correct"), bool)


def _varied(records: list[dict[str, Any]]) -> list[str]:
    from confidently.render3db.analysis import value_of

    names = ["object", "environment", *dict.fromkeys(k for r in records for k in r.get("render_args", {}))]
    return [n for n in names if len({json.dumps(value_of(r, n), sort_keys=True) for r in records}) > 1]


def _bins(records: list[dict[str, Any]], param: str) -> int | None:
    """Bin a numeric parameter with many distinct values (random search); keep grid values as they are."""
    from confidently.render3db.analysis import value_of

    values = {value_of(r, param) for r in records}
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return 8 if numeric and len(values) > 12 else None


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(_short(v) for v in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@register_section("render-3db", "render-3db — controlled 3-D renders and where the model fails", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    from confidently.render3db.analysis import accuracy_by, heatmap, overall

    total = overall(records)
    blocks = [Block("Overall", columns=["renders", "correct", "accuracy", "95 % interval"],
                    rows=[[total["n"], total["correct"], fmt(total["acc"]), "–".join(fmt(v) for v in total["ci"])]])]
    varied = _varied(records)
    shown = varied[:6]
    if shown:
        figure, axes = new_figure(panels=len(shown), width=3.3, height=3.4)
        for axis, param in zip(axes, shown, strict=True):
            rows = accuracy_by(records, param, _bins(records, param))
            acc = [r["acc"] for r in rows]
            errors = [[max(0.0, r["acc"] - r["ci"][0]) for r in rows], [max(0.0, r["ci"][1] - r["acc"]) for r in rows]]
            axis.bar(range(len(rows)), acc, yerr=errors, capsize=2, color="tab:blue")
            axis.set_xticks(range(len(rows)), [_short(r["value"]) for r in rows], fontsize=7,
                            rotation=45 if len(rows) > 5 else 0)
            axis.set(title=param, ylim=(0, 1.05))
        axes[0].set_ylabel("accuracy (Wilson 95 %)")
        blocks.append(Block("Accuracy per control value", "every varied parameter, the others pooled",
                            image=save(figure, folder, "by-parameter.png")))
    if {"object", "environment"} & set(varied):
        rows = accuracy_by(records, ["object", "environment"])
        blocks.append(Block("Object × environment", columns=["object", "environment", "renders", "accuracy"],
                            rows=[[*r["value"], r["n"], fmt(r["acc"])] for r in rows]))
    controls = [p for p in varied if p not in ("object", "environment")]
    if len(controls) >= 2:
        pair = controls[:2]
        grid = heatmap(records, pair, bins=max((b for p in pair if (b := _bins(records, p))), default=None))
        figure, (axis,) = new_figure(width=5.4, height=3.8)
        image = axis.imshow(grid["acc"], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axis.set_yticks(range(len(grid["x"])), [_short(v) for v in grid["x"]], fontsize=7)
        axis.set_xticks(range(len(grid["y"])), [_short(v) for v in grid["y"]], fontsize=7,
                        rotation=45 if len(grid["y"]) > 5 else 0)
        axis.set(ylabel=pair[0], xlabel=pair[1])
        figure.colorbar(image, ax=axis, label="accuracy")
        blocks.append(Block("Interaction", f"accuracy over {pair[0]} × {pair[1]}, the rest pooled",
                            image=save(figure, folder, "heatmap.png")))
    samples = [(r, image) for r in records if (image := readable_image(r.get("image"))) is not None][:8]
    if samples:
        figure, axes = new_figure(panels=len(samples), width=1.6, height=2.9)
        for axis, (record, image) in zip(axes, samples, strict=True):
            axis.imshow(image)
            axis.set_title(f"{record.get('object')}: {'right' if record['is_correct'] else 'wrong'}", fontsize=8,
                           color="tab:green" if record["is_correct"] else "tab:red")
            axis.axis("off")
        figure.set_size_inches(max(5.2, 1.6 * len(samples)), 2.9)
        blocks.append(Block("Sample renders", "the first renders whose images can be read from here",
                            image=save(figure, folder, "samples.png")))
    return blocks
