"""The front door for a tool's ``--data``: :func:`open_dataset` opens any map-style source (manifest, image
folder, safetensors shard or pack, ``demo:*``), :func:`open_source` that or tar shards, which stream.

Commands that read their data once in some order (training, evaluation, attacks, features) take either
kind through :class:`~confidently.data.loader.StreamLoader`; both answer the questions a command asks
before the first batch (``len``, ``num_classes``, ``classes``, ``image_shape()``, ``image_size()``,
``fingerprint()``). Labels differ: a map-style dataset's are checked up front from its records, a
stream's as its records arrive (:func:`check_labels` says which).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from confidently.data.dataset import ImageDataset, folder_records, open_demo, shard_dataset, split_folders
from confidently.data.pack import open_pack
from confidently.data.webdataset import WebDatasetStream, is_webdataset, open_stream
from confidently.errors import InvalidInput, UsageError
from confidently.io.records import Record, RecordReader

Source = ImageDataset | WebDatasetStream


def open_dataset(source: str | os.PathLike, split: str | None = None, *, channels: int | None = 3,
                 classes: list[str] | None = None,
                 on_invalid: Callable[[InvalidInput], None] | None = None) -> ImageDataset:
    """Open any dataset source (see the module docstring); ``split`` keeps one split only.

    Manifests and folders of safetensors shards made by ``dataset pack`` split on their records'
    ``split`` field, image folders on a ``ROOT/<split>`` subfolder, demo sets on their built-in
    seeded split. A manifest's bad line raises :class:`InvalidInput`, or is handed to ``on_invalid``
    and left out (``--skip-invalid``). Tar shards are streams: see :mod:`confidently.data.webdataset`.
    """
    text = str(source)
    if text.startswith("demo:"):
        return open_demo(text, split, channels=channels)
    if is_webdataset(text):
        raise UsageError(f"{text} names WebDataset tar shards, which stream in order and cannot be indexed "
                         "as this command needs (training, evaluation and `dataset` read them); "
                         f"`dataset pack {text} --format safetensors --out DIR` makes memory-mapped shards "
                         "that every command reads")
    path = Path(text)
    if text != "-" and not path.exists():
        raise UsageError(f"dataset not found: {text} (expected a JSONL manifest, an image folder, "
                         "a .safetensors shard or demo:digits|shapes|photos)")
    if path.is_dir() and (path / "pack.json").is_file():
        return open_pack(path, split, channels=channels, classes=classes)
    if path.is_dir():
        if split and not (path / split).is_dir():
            raise InvalidInput(f"{path} has no '{split}' subfolder; expected {path}/{split}/<class>/<images>")
        if split and split not in split_folders(path):  # a class folder of another name under ROOT
            records, folder_classes = folder_records(path / split)
        else:
            records, folder_classes = folder_records(path, split)
        return ImageDataset(records, name=str(path / split if split else path), classes=classes or folder_classes,
                            channels=channels)
    if path.suffix == ".safetensors":
        if split:
            raise InvalidInput(f"{path} is a shard and has no splits; make one shard per split")
        return shard_dataset(path, channels)
    records = []
    for item in RecordReader(text, require_image=True, yield_errors=on_invalid is not None):
        if isinstance(item, InvalidInput):
            on_invalid(item)
        else:
            records.append(item)
    if split:
        records = [r for r in records if r.data.get("split") == split]
        if not records:
            raise InvalidInput(f"{text} has no records with \"split\": \"{split}\"", field="split")
    names = classes or _class_names(records)
    return ImageDataset(records, name="<stdin>" if text == "-" else text, classes=names, channels=channels)


def _class_names(records: Sequence[Record]) -> list[str] | None:
    """Class names from records' optional ``class_name`` field, indexed by label."""
    named = {r.data["label"]: r.data["class_name"] for r in records if "label" in r.data and "class_name" in r.data}
    if not named:
        return None
    return [str(named.get(i, i)) for i in range(max(r.data.get("label", 0) for r in records) + 1)]


def open_source(source: str | os.PathLike, split: str | None = None, *, channels: int | None = 3,
                on_invalid: Callable[[InvalidInput], None] | None = None) -> Source:
    """Tar shards (a pack folder, paths, brace patterns, URLs) as a stream; anything else as :func:`open_dataset`."""
    if is_webdataset(source):
        return open_stream(source, split, channels=channels)
    return open_dataset(source, split, channels=channels, on_invalid=on_invalid)


def check_labels(data: Source, num_classes: int, what: str | None = None) -> bool:
    """Refuse a map-style dataset with unlabelled records or labels beyond ``num_classes`` (read from its
    records: nothing is decoded). Returns False for a stream, whose labels the loader checks as they come
    (``StreamLoader(..., require_labels=True, num_classes=...)``)."""
    if isinstance(data, WebDatasetStream):
        return False
    labels = data.labels
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InvalidInput(f"{what or data.name} has labels {int(labels.min())}..{int(labels.max())}, outside the "
                           f"model's {num_classes} classes (set --num-classes to match the data; every record "
                           "needs a label)", field="label")
    return True
