"""render-3db: from the run's records, accuracy per control value, object × environment, a 2-D interaction
heatmap and sample renders; from `render-3db analyze` rows, 3DB's dashboard panels (``--report``: failure
modes, per object, aggregate), background complexity, texture vs shape bias, the UV heat map, the renders to
photograph and agreement with the photos. An analysis whose rows are absent is named with the flag that
makes it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, readable_image, save

# the analyze rows drawn here (by ``analysis``), and the flags of `render-3db analyze` that write them
FLAGS = {"report": "--report", "background_complexity": "--background-complexity",
         "texture_bias": "--texture-bias --texture-labels FILE",
         "uv_heatmap": "--uv-heatmap --object ID --tensors FILE",
         "select_physical": "--select-physical K", "agreement": "--agreement photos.jsonl"}
DRAWN = {*FLAGS, "background_correlation", "overall"}
CELL = {"n": "integer", "correct": "integer", "acc": "number", "ci": "list"}
EXTREMES = {"best.acc": "number", "best.n": "integer", "worst.acc": "number", "worst.n": "integer"}
# what each analyze row must hold for the panels (``analysis`` → fields, or (panel, kind) → fields for --report)
ROW_FIELDS: dict[Any, dict[str, str]] = {
    "overall": CELL,
    ("failure_modes", "control"): {"param": "string", **CELL, "rank": "integer", "wrong": "list"},
    ("failure_modes", "scene"): {"object": "string", "environment": "string", **CELL, "rank": "integer",
                                 "wrong": "list"},
    ("failure_modes", "configuration"): {"config": "object", **CELL, "rank": "integer", "wrong": "list"},
    ("per_object", "object"): {"object": "string", **CELL},
    ("per_object", "group"): {"object": "string", "group": "string", "sensitivity": "number", "param": "string",
                              **EXTREMES},
    ("aggregate", "overall"): {**CELL, "objects": "integer", "environments": "integer"},
    ("aggregate", "value"): {"param": "string", **CELL},
    ("aggregate", "trend"): {"param": "string", "values": "integer", "spread": "number", "spearman": "number?",
                             **EXTREMES},
    "background_complexity": {"environment": "string", "complexity": "number", "acc": "number", "n": "integer"},
    "background_correlation": {"environments": "integer", "source": "string", "spearman": "number?",
                               "pearson": "number?"},
    "texture_bias": {"param": "string", "by": "string", "value": "string", "n": "integer", "texture_frac": "number",
                     "shape_frac": "number", "previously_correct": "integer", "acc_after": "number?",
                     "drop": "number?"},
    "uv_heatmap": {"object": "string", "tex_size": "integer", "renders": "integer", "visible_texels": "integer",
                   "acc_min": "number?", "acc_max": "number?", "acc_mean": "number?", "tensors": "string?"},
    "select_physical": {"object": "string", "is_correct": "bool", "rank": "integer", "id": "string"},
    "agreement": {"object": "string", "n": "integer", "agreement": "number", "ci": "list", "ppv": "number?",
                  "npv": "number?"},
}


def _claims(record: dict[str, Any]) -> bool:
    if record.get("tool") == "render-3db":
        return isinstance(record.get("is_correct"), bool)
    if "tool" in record or record.get("analysis") not in DRAWN:
        return False
    return record["analysis"] != "report" or (record.get("panel"), record.get("kind")) in ROW_FIELDS


def _fields(record: dict[str, Any]) -> dict[str, str]:
    """An analyze row's fields (a run's records are read as analyze reads them)."""
    if record.get("tool") == "render-3db":
        return {}
    key = (record["panel"], record["kind"]) if record["analysis"] == "report" else record["analysis"]
    return ROW_FIELDS[key]


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


@register_section("render-3db", "render-3db — controlled 3-D renders and where the model fails", _claims, _fields)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    runs = [r for r in records if r.get("tool") == "render-3db"]
    rows = [r for r in records if "tool" not in r]
    blocks = _runs(runs, folder) if runs else _overall(rows)
    return blocks + _analyses(rows, folder)


def _overall(rows: list[dict[str, Any]]) -> list[Block]:
    """Without the run's records, the overall accuracy analyze wrote first."""
    total = next((r for r in rows if r["analysis"] == "overall"), None)
    return [] if total is None else [_overall_block(total)]


def _overall_block(total: dict[str, Any]) -> Block:
    return Block("Overall", columns=["renders", "correct", "accuracy", "95 % interval"],
                 rows=[[total["n"], total["correct"], fmt(total["acc"]), _interval(total["ci"])]])


def _runs(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    from confidently.render3db.analysis import accuracy_by, heatmap, overall

    blocks = [_overall_block(overall(records))]
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


def _interval(ci: list[float] | None) -> str:
    return "–".join(fmt(v) for v in ci) if ci else "–"


def _where(row: dict[str, Any]) -> str:
    """A failure mode in words: ``camera.zoom_factor = 0.7``, ``mug in busy``, ``a=1, b=fog``."""
    if row["kind"] == "scene":
        return f"{row['object']} in {row['environment']}"
    if row["kind"] == "configuration":
        return ", ".join(f"{k} = {_short(v)}" for k, v in row["config"].items())
    if "bin" in row:
        return f"{row['param']} in [{_short(row['bin'][0])}, {_short(row['bin'][1])}]"
    return f"{row['param']} = {_short(row.get('value'))}"


def _extreme(cell: dict[str, Any]) -> str:
    return f"{_short(cell['value'])} ({fmt(cell['acc'])}, n={cell['n']})"


def _failure_modes(rows: list[dict[str, Any]]) -> list[Block]:
    kinds = {"control": "control values", "scene": "scenes", "configuration": "configurations"}
    table = sorted(rows, key=lambda r: (list(kinds).index(r["kind"]), r["rank"]))
    return [Block("Failure modes", "the lowest-accuracy " + ", ".join(kinds[k] for k in kinds if any(
        r["kind"] == k for r in rows)) + ", ranked by the upper end of the Wilson 95 % interval; cells with a "
        "wrong render only", columns=["kind", "where", "renders", "accuracy", "95 % interval", "wrong renders"],
        rows=[[r["kind"], _where(r), r["n"], fmt(r["acc"]), _interval(r["ci"]), " ".join(map(str, r["wrong"]))]
              for r in table])] if rows else [Block("Failure modes", "no control value, scene or configuration "
                                                    "has a wrong render")]


def _per_object(rows: list[dict[str, Any]], folder: Path) -> list[Block]:
    from confidently.render3db.analysis_report import plot_per_object

    blocks = []
    if plot_per_object(rows, str(folder / "panel-per-object.png")):
        blocks.append(Block("Per object", "each object's accuracy and its sensitivity to each control group: the "
                            "spread of its accuracy over the values of the group's most telling parameter",
                            image="panel-per-object.png"))
    blocks.append(Block("Per object: table", columns=["object", "renders", "accuracy", "group", "sensitivity",
                                                      "parameter", "best", "worst"],
                        rows=[[o["object"], o["n"], fmt(o["acc"]), "", "", "", "", ""] for o in rows
                              if o["kind"] == "object"] +
                        [[g["object"], "", "", g["group"], fmt(g["sensitivity"]), g["param"], _extreme(g["best"]),
                          _extreme(g["worst"])] for g in rows if g["kind"] == "group"]))
    return blocks


def _aggregate(rows: list[dict[str, Any]], folder: Path) -> list[Block]:
    from confidently.render3db.analysis_report import plot_aggregate

    trends = [r for r in rows if r["kind"] == "trend"]
    total = next((r for r in rows if r["kind"] == "overall"), None)
    blocks = []
    if plot_aggregate(rows, str(folder / "panel-aggregate.png")):
        caption = "accuracy over every object and environment per value of each varied parameter"
        if total is not None:
            caption += (f"; {total['n']} renders of {total['objects']} objects in {total['environments']} "
                        f"environments, accuracy {fmt(total['acc'])}")
        blocks.append(Block("Aggregate trends", caption, image="panel-aggregate.png"))
    blocks.append(Block("Aggregate trends: table", columns=["parameter", "values", "spread", "best", "worst",
                                                            "Spearman r"],
                        rows=[[t["param"], t["values"], fmt(t["spread"]), _extreme(t["best"]), _extreme(t["worst"]),
                               fmt(t["spearman"])] for t in trends]))
    return blocks


def _background(rows: list[dict[str, Any]], folder: Path) -> list[Block]:
    points = [r for r in rows if r["analysis"] == "background_complexity"]
    summary = next((r for r in rows if r["analysis"] == "background_correlation"), None)
    figure, (axis,) = new_figure(width=5.2, height=3.6)
    axis.scatter([r["complexity"] for r in points], [r["acc"] for r in points], color="tab:blue")
    for r in points:
        axis.annotate(str(r["environment"]), (r["complexity"], r["acc"]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axis.set(xlabel="background complexity (mean Sobel magnitude)", ylabel="accuracy", ylim=(-0.05, 1.05))
    caption = "accuracy per environment against the edge complexity of its background"
    if summary is not None:
        caption += (f" (from the {summary['source']}); Spearman {fmt(summary['spearman'])}, Pearson "
                    f"{fmt(summary['pearson'])} over {summary['environments']} environments")
    return [Block("Background complexity", caption, image=save(figure, folder, "background-complexity.png"))]


def _texture_bias(rows: list[dict[str, Any]]) -> list[Block]:
    return [Block("Texture vs shape", "swapped renders whose top-1 prediction is the texture's class or the shape's "
                  "(the object's label); accuracy left on renders whose original-texture counterpart was right",
                  columns=["swap", "by", "value", "renders", "texture's class", "shape's class", "previously right",
                           "accuracy after", "drop"],
                  rows=[[r["param"], r["by"], r["value"], r["n"], fmt(r["texture_frac"]), fmt(r["shape_frac"]),
                         r["previously_correct"], fmt(r.get("acc_after")), fmt(r.get("drop"))] for r in rows])]


def _uv_tensor(row: dict[str, Any]):
    """The row's ``uv_accuracy`` heat map when its --tensors file can be read from here; None otherwise."""
    path = row.get("tensors")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    from confidently.errors import InvalidInput
    from confidently.io.artifacts import load_artifact

    try:
        tensors, _ = load_artifact(path)
    except InvalidInput:
        return None
    heat = tensors.get("uv_accuracy")
    return heat if heat is not None and heat.ndim == 2 else None


def _uv(rows: list[dict[str, Any]], folder: Path) -> list[Block]:
    import numpy as np

    blocks = []
    for row in rows:
        heat = _uv_tensor(row)
        summary = (f"{row['renders']} renders, {row['visible_texels']} of {row['tex_size']}² texels seen, accuracy "
                   f"{fmt(row['acc_min'])}–{fmt(row['acc_max'])} (mean {fmt(row['acc_mean'])})")
        if heat is None:
            blocks.append(Block(f"UV heat map: {row['object']}", summary + "; the heat map itself is drawn when "
                                "the row's --tensors file can be read from where report runs"))
            continue
        figure, (axis,) = new_figure(width=5.2, height=4.2)
        image = axis.imshow(np.ma.masked_invalid(heat.float().numpy()), vmin=0, vmax=1, cmap="coolwarm",
                            extent=(0, 1, 1, 0), interpolation="nearest")
        axis.set(xlabel="u", ylabel="v")
        figure.colorbar(image, ax=axis, label="accuracy where the texel is visible")
        name = "uv-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", str(row["object"])) + ".png"
        blocks.append(Block(f"UV heat map: {row['object']}", summary + "; blank where never visible",
                            image=save(figure, folder, name)))
    return blocks


def _physical(rows: list[dict[str, Any]]) -> list[Block]:
    return [Block("Renders to photograph", "per object, renders the model got right and wrong, to recreate as photos "
                  "(then `render-3db analyze --agreement`)",
                  columns=["object", "model", "id", "environment", "label", "prediction"],
                  rows=[[r["object"], "right" if r["is_correct"] else "wrong", r["id"], r.get("environment"),
                         _short(r.get("label")), _short(r.get("prediction"))] for r in rows])]


def _agreement(rows: list[dict[str, Any]]) -> list[Block]:
    return [Block("Simulation vs photos", "how often a photo is judged as its render was (agreement), the photo "
                  "right when the render was (PPV) and wrong when it was (NPV)",
                  columns=["object", "photos", "agreement", "95 % interval", "PPV", "NPV"],
                  rows=[[r["object"], r["n"], fmt(r["agreement"]), _interval(r["ci"]), fmt(r["ppv"]), fmt(r["npv"])]
                        for r in rows])]


def _analyses(rows: list[dict[str, Any]], folder: Path) -> list[Block]:
    """Blocks for the analyze rows present, then one naming the analyses that are not."""
    def of(name: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["analysis"] == name]

    panels = of("report")
    blocks = []
    if panels:
        blocks += _failure_modes([r for r in panels if r["panel"] == "failure_modes"])
        blocks += _per_object([r for r in panels if r["panel"] == "per_object"], folder)
        blocks += _aggregate([r for r in panels if r["panel"] == "aggregate"], folder)
    if of("background_complexity"):
        blocks += _background(of("background_complexity") + of("background_correlation"), folder)
    if of("texture_bias"):
        blocks += _texture_bias(of("texture_bias"))
    if of("uv_heatmap"):
        blocks += _uv(of("uv_heatmap"), folder)
    if of("select_physical"):
        blocks += _physical(of("select_physical"))
    if of("agreement"):
        blocks += _agreement(of("agreement"))
    missing = [name for name in FLAGS if not of(name)]
    if missing:
        blocks.append(Block("Analyses not run", "not in these inputs: `render-3db analyze RESULTS FLAG > rows.jsonl`, "
                            "then give report the rows with the records",
                            columns=["analysis", "flag"], rows=[[name, FLAGS[name]] for name in missing]))
    return blocks
