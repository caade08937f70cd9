"""3DB's dashboard reads render-3db runs: the log folder ``threedboard`` serves, written from our records.

``python -m threedboard OUTDIR`` (the ``threedboard`` package, ``pip install 'confidently[threedboard]'``)
reads ``OUTDIR/details.log`` (one JSON object per render, every line with the same keys in the same
order: ``id``, ``model`` = the object, ``environment``, ``output_type``, the evaluator's keys, and
``render_args`` keyed ``<Name>Control.<param>`` as 3DB's search space names them), ``OUTDIR/class_maps.json``
(class names by index, for the predicted label it draws on each image) and ``OUTDIR/images/<id>_rgb.png``
(3DB's image logger's layout). Renders come from the records' image references (PNG files or safetensors
shards); records without a judgement or an image (``--no-eval``, ``--dry-run``, failed renders) are
left out and counted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from confidently.errors import InvalidInput, UsageError
from confidently.io.atomic import claim_folder, record_folder_files, write_bytes_atomic

# the evaluator keys 3DB's JSON logger writes, per output type (our detection records add the boxes the
# dashboard draws)
RESULT_KEYS = {"classes": ("is_correct", "prediction"),
               "bboxes": ("is_correct", "precision", "recall", "is_correct_nolabel", "precision_nolabel",
                          "recall_nolabel", "is_valid", "boxes")}


def control_key(param: str) -> str:
    """``camera.zoom_factor`` → ``CameraControl.zoom_factor`` (3DB keys render_args by control class)."""
    control, _, name = param.rpartition(".")
    control = control.rpartition(".")[2] or "Scene"
    return "".join(part.capitalize() for part in control.split("_")) + "Control." + name


def dashboard_row(record: dict[str, Any]) -> dict[str, Any]:
    """One line of ``details.log`` for a judged render record."""
    output_type = record.get("output_type", "classes")
    if output_type not in RESULT_KEYS:
        raise InvalidInput(f"record {record.get('id')}: output_type {output_type!r}; 3DB's dashboard shows "
                           f"{' and '.join(RESULT_KEYS)}")
    missing = [key for key in RESULT_KEYS[output_type] if key not in record]
    if missing:
        raise InvalidInput(f"record {record.get('id')}: no {', '.join(missing)} (a {output_type} record of "
                           "`render-3db run` has them)")
    row = {"id": record["id"], "model": record["object"], "environment": record["environment"],
           "output_type": output_type}
    row.update({key: record[key] for key in RESULT_KEYS[output_type]})
    row["render_args"] = {control_key(k): v for k, v in sorted(record.get("render_args", {}).items())}
    return row


class RenderReader:
    """Writes a record's render as a PNG: copies its PNG file, or encodes its shard row."""

    def __init__(self, base: Path):
        self.base = base
        self.shards: dict[Path, Any] = {}

    def write(self, ref: Any, target: Path) -> None:
        if isinstance(ref, str):
            source = self.base / ref
            if not source.is_file():
                raise InvalidInput(f"render {source} does not exist (records' image paths are relative to the "
                                   "records file's folder)")
            partial = target.with_name(target.name + ".part")
            shutil.copyfile(source, partial)
            partial.replace(target)
            return
        from confidently.io.artifacts import ArtifactRows
        from confidently.io.images import save_image

        path = self.base / str(ref["tensors"])
        if path not in self.shards:
            self.shards[path] = ArtifactRows(path)
        save_image(self.shards[path].row(str(ref["key"]), int(ref["index"])).float() / 255.0, target)


def write_dashboard(records: list[dict[str, Any]], base: Path, outdir: Path, *, class_map: list[str] | None = None,
                    force: bool = False) -> dict[str, int]:
    """Write 3DB's log layout for ``records`` (image paths relative to ``base``) into ``outdir``; returns
    ``{"renders": written, "skipped": left out}``."""
    rows, refs, skipped = [], [], 0
    for record in records:
        if "is_correct" not in record or "error" in record or record.get("image") is None:
            skipped += 1
            continue
        rows.append(dashboard_row(record))
        refs.append(record["image"])
    if not rows:
        raise UsageError(f"none of the {len(records)} records is a judged render with an image: run "
                         "`render-3db run` with a model and --images-dir or --images-shard")
    keys = list(rows[0]) + sorted(rows[0]["render_args"])
    for row in rows:
        if list(row) + sorted(row["render_args"]) != keys:
            raise InvalidInput(f"record {row['id']} has other fields or parameters than record {rows[0]['id']}; "
                               "3DB's dashboard shows one experiment (one output type, one set of controls) "
                               "at a time")
    if class_map is None:
        labels = [row["prediction"][0] for row in rows if row.get("prediction")] + \
                 [box[5] for row in rows for box in row.get("boxes", [])]
        class_map = [str(i) for i in range(max(labels, default=0) + 1)]
    claim_folder(outdir, "render-3db", force=force)
    images = outdir / "images"
    images.mkdir(exist_ok=True)
    reader = RenderReader(base)
    for row, ref in zip(rows, refs, strict=True):
        reader.write(ref, images / f"{row['id']}_rgb.png")
    write_bytes_atomic(outdir / "class_maps.json", json.dumps(list(class_map)).encode())
    write_bytes_atomic(outdir / "details.log", b"".join(json.dumps(row).encode() + b"\n" for row in rows))
    record_folder_files(outdir, "render-3db", ["details.log", "class_maps.json",
                                               *(f"images/{row['id']}_rgb.png" for row in rows)])
    return {"renders": len(rows), "skipped": skipped}
