"""Where renders go: PNG files per render, or safetensors shards other tools read as datasets.

A shard holds ``images`` uint8 N×3×H×W and ``labels`` int64 N (so ``--data renders.safetensors`` works
in every tool), optional ``segmentation`` int32 N×1×H×W, ``uv`` and ``depth`` float16, and metadata
``ids`` in order. Records reference rows as ``{"tensors": FILE, "key": "images", "index": I}``. A
record is released as soon as its render is done, so a killed run keeps every finished record; the
shard holding its image is written (atomically) when it fills or the run ends, and shards roll over
every ``shard_size`` renders. A record whose shard never reached disk is not finished
(:func:`image_on_disk`): a resumed run renders it again. :class:`TensorBoardLog` is 3DB's ``tb_logger``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, MissingBackend
from confidently.io.artifacts import artifact_metadata, load_artifact_metadata, save_artifact
from confidently.io.images import save_image

SHARD_KEYS = {"rgb": "images", "segmentation": "segmentation", "uv": "uv", "depth": "depth"}


def _ref_path(path: Path, base: Path) -> str:
    return os.path.relpath(path.resolve(), base.resolve())


def image_on_disk(record: dict[str, Any], base: Path, shard_ids: dict[Path, list[str]]) -> bool:
    """Whether the render ``record`` points at was written (paths relative to ``base``); ``shard_ids``
    caches each shard's ``ids`` metadata. A record without an image reference counts as written."""
    ref = record.get("image")
    if isinstance(ref, str):
        return (base / ref).is_file()
    if not isinstance(ref, dict) or "tensors" not in ref:
        return True
    path = base / str(ref["tensors"])
    if path not in shard_ids:
        try:
            shard_ids[path] = list(load_artifact_metadata(path).get("ids") or [])
        except InvalidInput:
            shard_ids[path] = []
    ids, index = shard_ids[path], ref.get("index")
    return isinstance(index, int) and 0 <= index < len(ids) and ids[index] == record.get("id")


class PngWriter:
    """``DIR/<id>_rgb.png`` per render; the record's ``image`` is its path relative to ``base``."""

    def __init__(self, directory: Path, base: Path):
        self.directory, self.base = Path(directory), Path(base)
        self.directory.mkdir(parents=True, exist_ok=True)

    def add(self, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        path = self.directory / f"{record['id']}_rgb.png"
        save_image(tensors["rgb"].float() / 255.0, path)
        record["image"] = _ref_path(path, self.base)
        return record

    def close(self) -> None:
        """Nothing is held back: each PNG is written before its record."""


class ShardWriter:
    """Safetensors shards of renders; ``add`` returns its record at once, the shard follows when full.

    With ``keep_existing`` (a resumed run) numbered shards already on disk are skipped, not replaced:
    the earlier run's records point at them.
    """

    def __init__(self, path: Path, base: Path, *, total: int, shard_size: int = 1024,
                 meta: dict[str, Any] | None = None, keep_existing: bool = False):
        self.path, self.base, self.shard_size = Path(path), Path(base), max(1, shard_size)
        self.rolls = total > self.shard_size
        self.meta = meta or {}
        self.keep_existing = keep_existing
        self.index = 0
        self._skip_existing()
        self.buffer: list[tuple[dict[str, Any], dict[str, torch.Tensor]]] = []
        self.files: list[Path] = []

    def current(self) -> Path:
        if not self.rolls:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{self.index:05d}{self.path.suffix}")

    def add(self, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        ref = _ref_path(self.current(), self.base)
        row = len(self.buffer)
        record["image"] = {"tensors": ref, "key": "images", "index": row}
        for name in ("segmentation", "uv", "depth"):
            if name in tensors:
                record[name] = {"tensors": ref, "key": SHARD_KEYS[name], "index": row}
        self.buffer.append((record, tensors))
        if len(self.buffer) >= self.shard_size:
            self.flush()
        return record

    def _skip_existing(self) -> None:
        while self.keep_existing and self.rolls and self.current().exists():
            self.index += 1

    def flush(self) -> None:
        if not self.buffer:
            return
        records = [r for r, _ in self.buffer]
        tensors = {"images": torch.stack([t["rgb"] for _, t in self.buffer]),
                   "labels": torch.tensor([int(r["label"]) for r in records], dtype=torch.int64)}
        for name, key in SHARD_KEYS.items():
            if name != "rgb" and all(name in t for _, t in self.buffer):
                stacked = torch.stack([t[name] for _, t in self.buffer])
                tensors[key] = stacked.to(torch.int32) if name == "segmentation" else stacked.to(torch.float16)
        path = self.current()
        save_artifact(path, tensors, artifact_metadata(tool="render-3db", kind="renders",
                                                       ids=[r["id"] for r in records], **self.meta))
        self.files.append(path)
        self.buffer = []
        self.index += 1
        self._skip_existing()

    def close(self) -> None:
        self.flush()


class TensorBoardLog:
    """3DB's ``tb_logger``: per render (step = renders so far), the scalar ``Accuracy`` (3DB's tag; here the running
    accuracy of the judged renders), the render as an image tagged by its object's uid (3DB's tags),
    and a text of the same tag with the record's id, environment, parameters and judgement.

    Event files are streams TensorBoard reads while they grow, so they cannot be written atomically; a run's
    events go to a new file (TensorBoard names it by host, time and process). A fresh run removes the
    earlier runs' event files from ``directory`` (a folder inside the run's claimed OUTDIR, so they are the
    tool's own), a resumed one (``start`` renders done before) adds its steps after them, its running accuracy
    over its own renders.
    """

    KEYS = ("id", "environment", "render_args", "is_correct", "prediction", "precision", "recall", "error")

    def __init__(self, directory: Path, *, start: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MissingBackend("threedb.result_logging.tb_logger writes TensorBoard logs, which needs the "
                                 "tensorboard package: pip install tensorboard (or pip install "
                                 "'confidently[render]'); or drop the logger from logging.logger_modules") from None
        self.directory = Path(directory)
        if not start and self.directory.is_dir():
            for old in self.directory.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(log_dir=str(self.directory))
        self.step, self.n, self.correct = start, 0, 0

    def add(self, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.step += 1
        if "is_correct" in record:
            self.n += 1
            self.correct += int(bool(record["is_correct"]))
            self.writer.add_scalar("Accuracy", self.correct / self.n, self.step)
        tag = str(record.get("object", "render"))
        if "rgb" in tensors:
            self.writer.add_image(tag, tensors["rgb"], self.step)  # uint8 3×H×W, as stored
        fields = {key: record[key] for key in self.KEYS if key in record}
        self.writer.add_text(tag, "`" + json.dumps(fields) + "`", self.step)

    def close(self) -> None:
        self.writer.close()
