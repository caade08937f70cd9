"""The front door for a tool's ``--data``: tar shards stream, every other source is map-style.

Commands that read their data once in some order (training, evaluation, attacks, features) take either
kind through :class:`~confidently.data.loader.StreamLoader`; both answer the questions a command asks
before the first batch (``len``, ``num_classes``, ``classes``, ``image_shape()``, ``image_size()``,
``fingerprint()``). Labels differ: a map-style dataset's are checked up front from its records, a
stream's as its records arrive (:func:`check_labels` says which).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from confidently.data.dataset import ImageDataset, open_dataset
from confidently.data.webdataset import WebDatasetStream, is_webdataset, open_stream
from confidently.errors import InvalidInput

Source = ImageDataset | WebDatasetStream


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
