"""One dataset type for every source: records plus a way to get each record's image.

A source is a JSONL manifest, an image folder with class subfolders, a safetensors shard,
or ``demo:<name>``. Every sample keeps its record (id, label, split, any other fields), so
tools can write results next to what came in.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from confidently.data.demo import load_demo
from confidently.errors import InvalidInput
from confidently.io.images import ImageLoader, as_float, to_channels
from confidently.io.records import Record

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageDataset(Dataset):
    """Records with images, as a torch ``Dataset`` of ``(image, label)`` pairs.

    ``images`` (uint8 or float N×C×H×W) holds the demo sets, which are made in memory; every
    other source is read per record from its ``image`` reference (a file, or a row of a
    memory-mapped safetensors shard) when asked for. Batches come from :mod:`confidently.data.loader`.
    ``label`` is -1 for unlabelled records.
    """

    def __init__(self, records: Sequence[Record], *, name: str, classes: list[str] | None = None,
                 images: torch.Tensor | None = None, channels: int | None = 3):
        self.records = list(records)
        self.name = name
        self.images = images
        self.channels = channels
        self._loader = ImageLoader(channels)
        labels = [r.data.get("label") for r in self.records]
        known = [label for label in labels if label is not None]
        if classes is None and known:
            classes = [str(i) for i in range(max(known) + 1)]
        self.classes = classes
        self._labels = [-1 if label is None else label for label in labels]
        self.labels = torch.tensor(self._labels, dtype=torch.long)
        if self.classes is not None and known and max(known) >= len(self.classes):
            bad = next(r for r in self.records if (r.data.get("label") or 0) >= len(self.classes))
            raise bad.error(f"label {bad.data['label']} is outside the {len(self.classes)} classes of {name}", "label")

    @classmethod
    def from_tensors(cls, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, *,
                     ids: Sequence[str] | None = None, classes: list[str] | None = None,
                     fields: Sequence[dict[str, Any] | None] | None = None, name: str = "tensors") -> ImageDataset:
        """Images already in memory (uint8, or float in [0, 1], N×C×H×W) as a dataset, for library users
        and tests that hold tensors. Ids default to ``0..N-1`` (so per-record seeds are the row numbers);
        ``fields`` adds per-record fields, e.g. a deferred ``trigger``."""
        labels = [None] * len(images) if labels is None else [int(label) for label in labels]
        ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
        extra = [None] * len(images) if fields is None else list(fields)
        records = []
        for i, (record_id, label, more) in enumerate(zip(ids, labels, extra, strict=True)):
            data = {"id": record_id, **(more or {})}
            if label is not None and label >= 0:
                data["label"] = label
            records.append(Record(data, i + 1, name))
        return cls(records, name=name, classes=classes, images=images, channels=None)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    @property
    def ids(self) -> list[str]:
        return [r.data["id"] for r in self.records]

    def raw(self, index: int) -> torch.Tensor:
        """The image of record ``index`` as stored: uint8 C×H×W, or float32 in [0, 1] for float tensors."""
        if self.images is not None:
            image = self.images[index]
            return to_channels(image if image.dtype == torch.uint8 else image.float(), self.channels)
        record = self.records[index]
        if "image" not in record.data:
            raise record.error("missing: expected an image path or tensor reference", "image")
        try:
            return self._loader.load_raw(record.data["image"], record.base_dir)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, source=record.source, line=record.line, field="image",
                               record_id=record.id) from None

    def image(self, index: int) -> torch.Tensor:
        """The image of record ``index`` as float C×H×W in [0, 1]."""
        return as_float(self.raw(index))

    def image_shape(self) -> tuple[int, ...]:
        """The stored shape (C, H, W) of the first image (a folder may mix sizes)."""
        return tuple(self.raw(0).shape)

    def image_size(self) -> int:
        """The size to build a model for when none is given: the images' own (for files, the first image's
        shorter side, since a folder may mix sizes; the data loader fits every image to the model)."""
        return int(min(self.image_shape()[-2:]))

    def label(self, index: int) -> int:
        return self._labels[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index)
        spec = self.records[index].data.get("trigger")
        if spec:  # a deferred trigger is the last step
            image = self.stamp(image[None], [index])[0]
        return image, self._labels[index]

    def stamp(self, images: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """Stamp the deferred triggers of the records at ``indices`` onto their (preprocessed) images."""
        from confidently.data.triggers import stamp_rows

        specs = [self.records[i].data.get("trigger") for i in indices]
        try:
            return stamp_rows(images, specs)
        except InvalidInput as exc:
            bad = next(self.records[i] for i, spec in zip(indices, specs, strict=True) if spec)
            raise InvalidInput(exc.message, source=bad.source, line=bad.line, field="trigger",
                               record_id=bad.id) from None

    def subset(self, indices: Sequence[int], name: str | None = None) -> ImageDataset:
        """The records at ``indices`` (same classes and channels)."""
        indices = list(indices)
        images = self.images[indices] if self.images is not None else None
        return ImageDataset([self.records[i] for i in indices], name=name or self.name, classes=self.classes,
                            images=images, channels=self.channels)

    def select_classes(self, classes: Sequence[int], name: str | None = None) -> ImageDataset:
        """The records of ``classes``, relabelled 0..k-1 in the order given (a task carved from a bigger set)."""
        order = list(classes)
        remap = {label: position for position, label in enumerate(order)}
        rows = [i for i, label in enumerate(self._labels) if label in remap]
        records = [Record({**self.records[i].data, "label": remap[self._labels[i]]}, self.records[i].line,
                          self.records[i].source, self.records[i].base_dir) for i in rows]
        names = [self.classes[k] for k in order] if self.classes and max(order, default=-1) < len(self.classes) \
            else None
        images = self.images[rows] if self.images is not None else None
        return ImageDataset(records, name=name or self.name, classes=names, images=images, channels=self.channels)

    def fingerprint(self) -> str:
        """A short hash of ids and labels, stored in model metadata as the training data's identity."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(json.dumps([record.data["id"], record.data.get("label")]).encode())
        return digest.hexdigest()[:16]

    def info(self, decode: bool = True, on_invalid: Callable[[InvalidInput], None] | None = None) -> dict[str, Any]:
        """Counts, classes and image shapes (decoding every image, which also checks them).

        An image that does not decode raises :class:`InvalidInput`, or goes to ``on_invalid`` and
        is left out of the shapes.
        """
        shapes: Counter = Counter()
        if decode:
            if self.images is not None:
                shapes[tuple(to_channels_batch(self.images[:1].float(), self.channels).shape[1:])] = len(self)
            else:
                for index in range(len(self)):
                    try:
                        shapes[tuple(self.image(index).shape)] += 1
                    except InvalidInput as exc:
                        if on_invalid is None:
                            raise
                        on_invalid(exc)
        per_class = Counter(int(label) for label in self.labels if label >= 0)
        splits = Counter(r.data.get("split") for r in self.records if r.data.get("split"))
        return {"name": self.name, "count": len(self), "num_classes": self.num_classes, "classes": self.classes,
                "per_class": {str(k): per_class[k] for k in sorted(per_class)},
                "unlabelled": int((self.labels < 0).sum()), "splits": dict(sorted(splits.items())),
                "shapes": [{"shape": list(shape), "count": count} for shape, count in shapes.most_common()]}


def to_channels_batch(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or images.shape[1] == channels:
        return images
    return torch.stack([to_channels(img, channels) for img in images])


SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")


def _subfolders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> list[str]:
    """The split subfolders of an ImageNet-layout folder (``ROOT/train/<class>/...``, ``ROOT/val/...``): those
    named like a split that hold class subfolders (other folders beside them, such as packs or outputs, are
    not data); [] for a plain class-subfolder folder."""
    return [name for name in _subfolders(root) if name in SPLIT_FOLDERS and _subfolders(root / name)]


def folder_records(root: Path, split: str | None = None) -> tuple[list[Record], list[str]]:
    """Records of an image folder in class-subfolder layout (class = sorted subfolder index).

    An ImageNet layout (:func:`split_folders`) has one class list, the union over its splits, so labels agree
    between them, and ids relative to ROOT (``val/<class>/<file>``), so an image has one id however the folder
    is opened; ``split`` reads ``ROOT/<split>`` only, and every record carries its ``split``.
    """
    splits = split_folders(root)
    if not splits:
        classes = _subfolders(root)
        if not classes:
            raise InvalidInput(f"{root} has no class subfolders; expected ROOT/<class>/<image files>")
        records = _class_folder_records(root, root, classes, None)
    else:
        classes = sorted({name for part in splits for name in _subfolders(root / part)})
        records = [r for part in ([split] if split else splits)
                   for r in _class_folder_records(root, root / part, classes, part)]
    if not records:
        raise InvalidInput(f"{root} has class subfolders but no image files in them")
    return records, classes


def _class_folder_records(base: Path, top: Path, classes: list[str], split: str | None) -> list[Record]:
    records: list[Record] = []
    for label, name in enumerate(classes):
        for path in sorted((top / name).rglob("*")) if (top / name).is_dir() else ():
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                rel = path.relative_to(base).as_posix()
                data = {"id": rel, "image": rel, "label": label, **({"split": split} if split else {})}
                records.append(Record(data, len(records) + 1, str(base), base))
    return records


def shard_dataset(path: Path, channels: int | None) -> ImageDataset:
    """A safetensors shard: ``images`` N×C×H×W (uint8 or float in [0, 1]), ``labels`` int64 N, optional ``ids``.

    Opened memory-mapped: only the labels are read here; each record's image is one row read when
    the loader asks for it (a float row is range-checked then).
    """
    from safetensors import SafetensorError, safe_open

    from confidently.io.artifacts import load_artifact_metadata

    meta = load_artifact_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            if "images" not in keys:
                raise InvalidInput(f"{path} has no 'images' tensor (it has {sorted(keys)}); a shard needs "
                                   "'images' N×C×H×W and optionally 'labels' N")
            shape = list(handle.get_slice("images").get_shape())
            labels = handle.get_tensor("labels") if "labels" in keys else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInput(f"not a safetensors file ({exc}): {path}") from None
    if len(shape) != 4 or shape[1] not in (1, 3, 4):
        raise InvalidInput(f"{path}: 'images' has shape {shape}; expected N×C×H×W with C in 1, 3 or 4")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != shape[0]):
        raise InvalidInput(f"{path}: 'labels' has shape {list(labels.shape)}; expected [{shape[0]}]")
    ids = meta.get("ids") or [f"{path.stem}-{i}" for i in range(shape[0])]
    if len(ids) != shape[0]:
        raise InvalidInput(f"{path}: metadata 'ids' has {len(ids)} entries for {shape[0]} images")
    location = str(path.resolve())
    records = []
    for i in range(shape[0]):
        data: dict[str, Any] = {"id": str(ids[i]), "image": {"tensors": location, "key": "images", "index": i}}
        if labels is not None:
            data["label"] = int(labels[i])
        records.append(Record(data, i + 1, str(path), path.resolve().parent))
    return ImageDataset(records, name=str(path), classes=meta.get("classes"), channels=channels)


def open_demo(spec: str, split: str | None = None, *, channels: int | None = 3) -> ImageDataset:
    """The demo set ``spec`` (``demo:NAME?options``) as an :class:`ImageDataset` held in memory."""
    demo = load_demo(spec)
    indices = list(range(len(demo.ids)))
    if split:
        indices = [i for i in indices if demo.splits[i] == split]
        if not indices:
            raise InvalidInput(f"{spec} has no split {split!r}; its splits are {sorted(set(demo.splits))}")
    records = []
    for position, i in enumerate(indices):
        data: dict[str, Any] = {"id": demo.ids[i], "split": demo.splits[i]}
        if demo.labels[i] >= 0:
            data["label"] = demo.labels[i]
        records.append(Record(data, position + 1, spec))
    images = demo.images[indices] if split else demo.images
    return ImageDataset(records, name=spec, classes=demo.classes, images=images, channels=channels)
