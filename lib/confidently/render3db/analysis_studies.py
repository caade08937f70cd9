"""The thesis' studies over records alone: texture vs shape bias (Figs. 6.10, 6.11) and physical realism
(choosing renders to recreate, then agreement with the photos; Fig. 6.15).

Texture swaps are the ``material.replacement_material`` (original: ``keep_original``) and ``texture.source``
(original: ``original``) parameters. A swapped render's *counterpart* is the render of the same object and
environment with every other parameter equal and the swap parameter at its original value.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from confidently.errors import InvalidInput, UsageError
from confidently.render3db.analysis import _top1, judged, wilson
from confidently.run.seeding import derive_seed

SWAPS = {"material.replacement_material": "keep_original", "texture.source": "original"}


def _labels(record: dict[str, Any]) -> set[int]:
    label = record.get("label")
    return {int(v) for v in (label if isinstance(label, list) else [label]) if v is not None}


def read_texture_labels(path: Path) -> dict[str, set[int]]:
    """``{"blender_control_material/zebra.blend": 340, "tiger.png": [292]}``: each texture's class(es), keyed
    by the swap value as the records hold it, or by its file name."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--texture-labels {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"--texture-labels {path}: expected a JSON object texture → class index (or list)")
    out = {}
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise UsageError(f"--texture-labels {path}: {key!r} → {value!r}; expected a class index or a list of them")
        out[str(key)] = set(values)
    return out


def _texture_classes(value: str, labels: dict[str, set[int]]) -> set[int] | None:
    name = value.partition("#")[0]
    for key in (value, name, Path(name).name, Path(name).stem):
        if key in labels:
            return labels[key]
    return None


def _others(record: dict[str, Any], param: str) -> tuple:
    args = tuple(sorted((k, repr(v)) for k, v in record.get("render_args", {}).items() if k != param))
    return record.get("object"), record.get("environment"), args


def texture_bias(records: list[dict[str, Any]], labels: dict[str, set[int]]) -> list[dict[str, Any]]:
    """Per swap parameter and texture, then per object: the fraction of swapped renders whose top-1 prediction
    is the texture's class (``texture_frac``) or the shape's, i.e. the object's label (``shape_frac``); and,
    among swapped renders whose original-texture counterpart was correct, the accuracy left and the drop."""
    records = judged(records)
    params = [p for p in SWAPS if any(p in r.get("render_args", {}) for r in records)]
    if not params:
        raise UsageError("no record has a swapped material or texture: the experiment needs the material control "
                         "(replacement_material) or the texture control (source)")
    rows: list[dict[str, Any]] = []
    for param in params:
        original = SWAPS[param]
        baseline = {_others(r, param): r["is_correct"] for r in records
                    if r.get("render_args", {}).get(param) == original}
        cells: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(
            ("n", "texture", "shape", "kept_n", "kept_correct"), 0))
        unknown = set()
        for r in records:
            value = r.get("render_args", {}).get(param)
            if value is None or value == original:
                continue
            classes = _texture_classes(str(value), labels)
            if classes is None:
                unknown.add(str(value))
                continue
            top1 = _top1(r)
            for key in (("texture", str(value)), ("object", str(r.get("object")))):
                cell = cells[key]
                cell["n"] += 1
                cell["texture"] += int(top1 in classes)
                cell["shape"] += int(top1 in _labels(r))
                if baseline.get(_others(r, param)) is True:
                    cell["kept_n"] += 1
                    cell["kept_correct"] += int(r["is_correct"])
        if unknown:
            raise UsageError(f"--texture-labels has no class for {', '.join(sorted(unknown))} (keys are the "
                             f"{param} values, or their file names)")
        for (by, value), c in sorted(cells.items()):
            row = {"analysis": "texture_bias", "param": param, "by": by, "value": value, "n": c["n"],
                   "texture_frac": c["texture"] / c["n"], "shape_frac": c["shape"] / c["n"],
                   "other_frac": (c["n"] - c["texture"] - c["shape"]) / c["n"],
                   "previously_correct": c["kept_n"]}
            if c["kept_n"]:
                acc = c["kept_correct"] / c["kept_n"]
                row.update(acc_after=acc, ci=wilson(c["kept_correct"], c["kept_n"]), drop=1.0 - acc)
            rows.append(row)
    return rows


def select_physical(records: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """Per object, ``k`` correctly and ``k`` wrongly classified renders to recreate as photos, drawn by
    (seed, record id) so the choice never depends on record order; fewer where fewer exist."""
    if k < 1:
        raise UsageError(f"--select-physical {k}: expected a positive count")
    records = judged(records)
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(str(r.get("object")), r["is_correct"])].append(r)
    rows = []
    for (obj, correct), members in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        chosen = sorted(members, key=lambda r: derive_seed(seed, r.get("id"), "select-physical"))[:k]
        for rank, r in enumerate(chosen):
            rows.append({"analysis": "select_physical", "object": obj, "is_correct": correct, "rank": rank,
                         "id": r.get("id"), "environment": r.get("environment"), "label": r.get("label"),
                         "prediction": r.get("prediction"), "render_args": r.get("render_args", {}),
                         **({"image": r["image"]} if r.get("image") is not None else {})})
    return rows


def read_real(path: Path) -> dict[str, bool]:
    """The real photos' outcomes: JSONL lines ``{"id": <render id>, "is_correct": true|false}``."""
    out = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"--agreement {path}: not readable ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--agreement {path} line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("is_correct"), bool):
            raise InvalidInput(f"--agreement {path} line {number}: expected {{\"id\": ..., \"is_correct\": "
                               "true|false}} (the photo of that render judged by the same model)")
        out[str(row["id"])] = row["is_correct"]
    if not out:
        raise InvalidInput(f"--agreement {path}: no photo outcomes")
    return out


def agreement(records: list[dict[str, Any]], real: dict[str, bool]) -> list[dict[str, Any]]:
    """Per object, then over all: how often the photo's correctness equals the render's (``agreement``), the
    positive predictive value (photo right when the render was) and the negative (photo wrong when the render
    was), with counts and Wilson 95 % intervals."""
    simulated = {str(r.get("id")): r for r in judged(records)}
    missing = sorted(set(real) - set(simulated))
    if missing:
        raise InvalidInput(f"--agreement: {len(missing)} photo id(s) match no judged render: "
                           f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    pairs: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for rid, photo in real.items():
        pairs[str(simulated[rid].get("object"))].append((simulated[rid]["is_correct"], photo))
    rows = []
    for obj in [*sorted(pairs), None]:
        members = pairs[obj] if obj is not None else [p for v in pairs.values() for p in v]
        agree = sum(s == p for s, p in members)
        positives = [p for s, p in members if s]
        negatives = [p for s, p in members if not s]
        row: dict[str, Any] = {"analysis": "agreement", "object": obj if obj is not None else "all", "n": len(members),
                               "agreement": agree / len(members), "ci": wilson(agree, len(members)),
                               "sim_correct": len(positives), "sim_wrong": len(negatives)}
        row["ppv"] = sum(positives) / len(positives) if positives else None
        row["npv"] = sum(not p for p in negatives) / len(negatives) if negatives else None
        rows.append(row)
    return rows


def plot_texture_bias(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    textures = [r for r in rows if r["by"] == "texture"]
    names = [Path(str(r["value"])).stem for r in textures]
    x = np.arange(len(textures))
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(textures) + 2), 3.2))
    ax.bar(x - 0.2, [r["texture_frac"] for r in textures], 0.4, label="texture's class", color="#c44e52")
    ax.bar(x + 0.2, [r["shape_frac"] for r in textures], 0.4, label="shape's class", color="#4c72b0")
    ax.scatter(x, [r.get("drop", np.nan) for r in textures], color="black", marker="_", s=200,
               label="accuracy drop (previously correct)")
    ax.set_xticks(x, names, fontsize=8, rotation=45 if len(textures) > 6 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of swapped renders")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_agreement(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(rows) + 2), 3.2))
    for offset, key, colour in ((-0.27, "agreement", "#55a868"), (0.0, "ppv", "#4c72b0"), (0.27, "npv", "#c44e52")):
        ax.bar(x + offset, [np.nan if r[key] is None else r[key] for r in rows], 0.27, label=key, color=colour)
    ax.set_xticks(x, [r["object"] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("simulation vs photos")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
