"""What the ablate commands read per record: the image fitted to the model and its removal units
(:class:`Inputs`), precomputed segment maps (:class:`Segments`), per-record rows stored by id (orders or
explanations, :class:`RowsById`), and removal orders, given or computed (:class:`Orders`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from confidently.data.preprocess import DataConfig, Preprocess, make_preprocess
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import ArtifactRows
from confidently.io.images import ImageLoader, as_float
from confidently.io.records import Record
from confidently.missingness.features import Features, from_label_map, list_units, make_features
from confidently.missingness.orders import feature_scores, list_orders, needs_scores, removal_order, saliency_maps
from confidently.models import load_model  # the package: its names register the tiny archs
from confidently.models.classifier import Classifier
from confidently.run.seeding import derive_seed, record_generator


class Segments:
    """Precomputed label maps (``segments`` int [N,H,W]) keyed by the ids in the file's metadata, read a map
    at a time."""

    def __init__(self, path: Path):
        self.file = ArtifactRows(path)
        if len(self.file.shapes.get("segments", ())) != 3:
            raise InvalidInput(f"{path} has no 'segments' tensor shaped N×H×W")
        self.path = path
        ids = self.file.meta.get("ids") or []
        if len(ids) != self.file.shapes["segments"][0]:
            raise InvalidInput(f"{path} needs an 'ids' list in its metadata, one per segment map")
        self.rows = {record_id: row for row, record_id in enumerate(ids)}

    def get(self, record: Record, height: int, width: int) -> Features:
        if record.id not in self.rows:
            raise record.error(f"no segment map for id {record.id!r} in {self.path}", "id")
        map_height, map_width = self.file.shapes["segments"][1:]
        if (map_height, map_width) != (height, width):
            raise record.error(f"segment map in {self.path} is {map_height}×{map_width} but the image is "
                               f"{height}×{width}", "segments")
        return from_label_map(self.file.row("segments", self.rows[record.id]))


class Inputs:
    """Loads image records (fitted to the model's size by ``fit``, when there is a model) and their features:
    grid patches, superpixels, a record's ``boxes`` or precomputed ``segments`` maps. :meth:`load` is what the
    per-record streamer reads ahead (thread-safe: the grid cache only ever gains equal entries)."""

    @classmethod
    def for_model(cls, unit: str, patch_size: int, ragged: bool, superpixels: int, segments: Path | None,
                  model: Classifier | None) -> Inputs:
        """Inputs fitted to ``model`` by its eval preprocessing (any photo size), a bad patch size refused now."""
        inputs = cls(unit, patch_size, ragged, superpixels, segments, model.input_size if model else None,
                     fit=make_preprocess("eval", DataConfig.of(model)) if model else None)
        inputs.check_geometry()
        return inputs

    def __init__(self, unit: str, patch_size: int, ragged: bool, superpixels: int, segments: Path | None,
                 size: tuple[int, int, int] | None, fit: Preprocess | None = None):
        if unit not in list_units():
            raise UsageError(f"unit {unit!r}: choose {', '.join(list_units())}")
        self.unit, self.patch_size, self.ragged, self.superpixels = unit, patch_size, ragged, superpixels
        self.segments = Segments(segments) if segments else None
        self.size, self.fit = size, fit
        self.loader = ImageLoader(size[0] if size else 3)
        self._grid: dict[tuple[int, int], Features] = {}

    def describe(self) -> dict[str, Any]:
        return {"unit": "segments" if self.segments else self.unit,
                "patch_size": self.patch_size if self.unit == "patch" and not self.segments else None}

    def check_geometry(self) -> None:
        """Refuse a bad patch size before reading any record (exit 2)."""
        if self.size and self.unit == "patch" and not self.segments:
            make_features("patch", torch.zeros(self.size), patch_size=self.patch_size, ragged=self.ragged)

    def load(self, record: Record) -> tuple[torch.Tensor, Features]:
        image = self.loader.load_field(record, "image", raw=True)
        height, width = image.shape[-2:]
        if self.size and (height, width) != self.size[1:]:
            if self.segments or record.data.get("boxes"):
                raise record.error(f"image is {height}×{width} but the model takes {self.size[1]}×{self.size[2]}; "
                                   "segments and boxes are drawn on the image as given, so resize it upstream "
                                   "(e.g. dataset export --size)", "image")
            image = self.fit(image)
            height, width = image.shape[-2:]
        image = as_float(image)
        if self.segments:
            return image, self.segments.get(record, height, width)
        if self.unit == "patch":
            if (height, width) not in self._grid:
                self._grid[(height, width)] = make_features("patch", image, patch_size=self.patch_size,
                                                            ragged=self.ragged)
            return image, self._grid[(height, width)]
        try:
            return image, make_features(self.unit, image, segments=self.superpixels, boxes=record.data.get("boxes"))
        except InvalidInput as exc:
            raise record.error(exc.message, exc.field or "boxes") from None


class RowsById:
    """A safetensors file of per-record rows (orders or explanations) found by record id, read a row at a time."""

    def __init__(self, path: Path, key: str, kind: str, hint: str):
        self.file = ArtifactRows(path)
        if key not in self.file.shapes:
            raise InvalidInput(f"{path} has no '{key}' tensor; expected {hint}")
        self.path, self.key, self.meta, self.kind = path, key, self.file.meta, kind
        self.index = {record_id: row for row, record_id in enumerate(self.meta.get("ids") or [])}

    def get(self, record: Record, count: int) -> torch.Tensor:
        if record.id not in self.index:
            raise record.error(f"no {self.kind} for id {record.id!r} in {self.path}", "id")
        row = self.file.row(self.key, self.index[record.id])
        counts = int(self.file.row("counts", self.index[record.id])) if "counts" in self.file.shapes else None
        stored = int((row >= 0).sum()) if counts is None else counts
        if stored != count:
            raise record.error(f"the {self.kind} in {self.path} ranks {stored} features but this image has {count} "
                               "(the same unit and patch size as when it was made?)", "id")
        return row[:count].long()


def padded(rows: list[torch.Tensor], fill: float, dtype: torch.dtype) -> torch.Tensor:
    """Rows of different lengths as one tensor, ``fill`` after each row's end (orders and scores files)."""
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row.to(dtype)
    return out


class Orders:
    """Removal orders from a file (``path``, made by ``ablate order --out``) or computed per record: random
    from (seed, id), or by the saliency of ``ref_model`` (a path, loaded on ``device`` only if it is needed)."""

    def __init__(self, name: str | None, path: Path | None, ref_model: Path | None, device: torch.device,
                 seed: int, batch_size: int):
        if path is None and name is None:
            name = "random"
        if path is not None and name not in (None, "given"):
            raise UsageError("give either an orders file or an order name, not both")
        if name not in (None, "given") and name not in list_orders():
            raise UsageError(f"order {name!r}: choose {', '.join([*list_orders(), 'given'])}")
        if name == "given" and path is None:
            raise UsageError("order 'given' needs an orders file")
        self.file = RowsById(path, "orders", "orders", "an orders file from `ablate order --out`") if path else None
        self.name = self.file.meta.get("order", "given") if self.file else name
        self.ref = load_model(ref_model, device) if ref_model and needs_scores(self.name) and not self.file else None
        if not self.file and needs_scores(self.name) and self.ref is None:
            raise UsageError(f"order {self.name!r} ranks features by a reference model's saliency: give ref_model")
        self.seed, self.batch_size = seed, batch_size

    def compute(self, records: list[Record], images: torch.Tensor,
                features: list[Features]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """(orders, feature scores or None) for a batch."""
        if self.file:
            return [self.file.get(r, f.count) for r, f in zip(records, features, strict=True)], [None] * len(records)
        scores: list[torch.Tensor | None] = [None] * len(records)
        if self.ref is not None:
            if tuple(images.shape[1:]) != self.ref.input_size:
                raise UsageError(f"the reference model takes {self.ref.input_size} images, these are "
                                 f"{tuple(images.shape[1:])}")
            maps = saliency_maps(self.ref, images, self.batch_size)
            scores = [feature_scores(maps[i], f.labels, f.count) for i, f in enumerate(features)]
        orders = [removal_order(self.name, f.count, s, record_generator(self.seed, r.id, "order"))
                  for r, f, s in zip(records, features, scores, strict=True)]
        return orders, scores


def fill_seeds(seed: int, records: list[Record], purpose: str, keys) -> list[list[int]]:
    """One random-fill seed per (record, key): a perturbation's pixels never depend on batching."""
    return [[derive_seed(seed, r.id, purpose, key) for key in keys] for r in records]
