"""The streaming data layer: any dataset through a torch ``DataLoader`` as preprocessed batches.

Workers decode and preprocess; stored images (uint8 for photos) cross to the main process
pinned, become float in [0, 1] on the device, and get their deferred triggers stamped there,
after any augmentation. Memory is bounded by ``batch_size × prefetch × workers``, never by the
dataset. Each record's augmentation is seeded by (seed, id, epoch) and the shuffle by
(seed, epoch), so the batches' contents do not depend on the worker count or the batch size,
and a rank of a ``torchrun`` job reads only its own part.

Sources are map-style (:class:`ImageDataset`: manifests, folders, shards, demo sets; items are
keyed by position) or iterable (:class:`ImageStream`, e.g. WebDataset tar shards; items carry their
record). Either way an item is ``(image after preprocess, label, key)`` or :class:`Failed`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from confidently.data.dataset import ImageDataset
from confidently.data.preprocess import DataConfig, Preprocess, make_preprocess
from confidently.errors import InvalidInput
from confidently.run.console import progress
from confidently.run.seeding import derive_seed, record_generator


@dataclass
class Batch:
    """Model-ready images (float N×C×H×W in [0, 1] on the device), labels (-1: none), each row's record
    fields (``id``, ``label``, any others) and, for map-style sources, the rows' dataset positions."""

    images: torch.Tensor
    labels: torch.Tensor
    records: list[dict]
    indices: list[int] | None = None

    @property
    def ids(self) -> list[str]:
        return [str(record["id"]) for record in self.records]


class ImageStream(IterableDataset):
    """An iterable source: yields ``(image after preprocess, label, record fields)`` or :class:`Failed`.

    Subclasses split their items by rank and loader worker themselves, seed random preprocessing by
    (seed, id, epoch) with :attr:`epoch`, and may know their length (``__len__``) for progress.
    """

    epoch = 0
    preprocess: Preprocess | None = None
    seed, shuffle, rank, world = 0, False, 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def configured(self, *, preprocess: Preprocess | None, seed: int, shuffle: bool, rank: int,
                   world: int) -> ImageStream:
        """A copy that one loader reads: its preprocess (or this stream's), seed, shuffle and rank part."""
        stream = copy.copy(self)
        stream.preprocess = preprocess or self.preprocess
        if stream.preprocess is None:
            raise ValueError(f"{type(self).__name__} needs a preprocess")
        stream.seed, stream.shuffle, stream.rank, stream.world = seed, shuffle, rank, world
        return stream


def check_stream_labels(records: list[dict], labels: torch.Tensor, num_classes: int | None,
                        stream: ImageStream) -> None:
    """Refuse a streamed record whose label is missing or outside the model's classes, naming it."""
    bad = ((labels < 0) | (labels >= (num_classes if num_classes is not None else 1 << 62))).nonzero()
    if len(bad):
        record = records[int(bad[0])]
        label = int(labels[bad[0]])
        problem = ("has no label (every record needs one here)" if label < 0 else
                   f"is labelled {label}, outside the model's {num_classes} classes (set --num-classes to match "
                   "the data)")
        raise InvalidInput(f"record {problem}", source=getattr(stream, "name", None), field="label",
                           record_id=str(record.get("id")))


@dataclass(frozen=True)
class Failed:
    """A record whose image did not load, carried back from a worker as data (its error, field by field)."""

    index: int
    message: str
    source: str | None
    line: int | None
    field: str | None
    record_id: str | None

    def error(self) -> InvalidInput:
        return InvalidInput(self.message, source=self.source, line=self.line, field=self.field,
                            record_id=self.record_id)


class Preprocessed(Dataset):
    """An :class:`ImageDataset` whose items are ``(stored image after preprocess, label, position)``,
    or :class:`Failed` for an image that does not decode.

    Keys are positions or ``(position, epoch)`` pairs (what :class:`EpochSampler` yields), so the
    epoch reaches random preprocessing in workers that live across epochs.
    """

    def __init__(self, dataset: ImageDataset, preprocess: Preprocess, seed: int = 0):
        self.dataset, self.preprocess, self.seed = dataset, preprocess, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int] | Failed:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        generator = (record_generator(self.seed, self.dataset.records[index].id, "augment", epoch)
                     if self.preprocess.random else None)
        try:
            image = self.dataset.raw(index)
        except InvalidInput as exc:
            return Failed(index, exc.message, exc.source, exc.line, exc.field, exc.record_id)
        return self.preprocess(image, generator), self.dataset.label(index), index


class EpochSampler(Sampler):
    """Dataset positions paired with the epoch: shuffled by (seed, epoch) if asked, then this rank's part.

    Every rank shuffles alike and takes every ``world``-th position from its rank (the last ranks
    get one fewer when the size does not divide), so ranks together read each record once.
    """

    def __init__(self, size: int, *, shuffle: bool = False, seed: int = 0, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def positions(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(position, self.epoch) for position in self.positions()])

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world))


def collate(samples: Sequence[tuple[torch.Tensor, int, int | dict] | Failed]
            ) -> tuple[torch.Tensor | None, torch.Tensor, list[int | dict], list[Failed]]:
    """Stack a batch's good rows (uint8 stays uint8 unless a float image is among them) and list its failed ones."""
    failed = [sample for sample in samples if isinstance(sample, Failed)]
    good = [sample for sample in samples if not isinstance(sample, Failed)]
    images = [image for image, _, _ in good]
    if len({image.dtype for image in images}) > 1:
        images = [image.float().div(255.0) if image.dtype == torch.uint8 else image.float() for image in images]
    labels = torch.tensor([label for _, label, _ in good], dtype=torch.long)
    return (torch.stack(images) if images else None), labels, [index for _, _, index in good], failed


def default_workers(dataset: ImageDataset | ImageStream) -> int:
    """Decoding workers when not told: none for sets already in memory, else up to 4 of the cores."""
    if getattr(dataset, "images", None) is not None:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Stored pixels to float in [0, 1] on ``device`` (the copy is uint8 for photos: a quarter of the bytes)."""
    images = images.to(device, non_blocking=True)
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


class StreamLoader:
    """Batches of a dataset for one job, epoch after epoch, with workers that persist between epochs.

    ``shuffle`` reorders each epoch by (seed, epoch); ``rank``/``world`` read a ``torchrun`` rank's part;
    ``stamp`` applies records' deferred triggers on the device after preprocessing. An image that does
    not decode raises :class:`InvalidInput` naming its record, or goes to ``on_invalid`` and is left out.

    An :class:`ImageStream` is read through a copy configured with this loader's ``seed``, ``shuffle``,
    ``rank``, ``world`` and ``preprocess`` (the stream's own when none is given here), so one stream can
    feed a training and a validation loader; its workers start anew each epoch to see the epoch. A stream's
    labels are unknown until read: with ``require_labels``, an unlabelled record (or, with ``num_classes``,
    one labelled outside ``0..num_classes-1``) stops the loader with :class:`InvalidInput` naming it.
    ``describe`` names the work for a progress bar over each epoch's batches (none without it: a training
    loop shows its own).
    """

    def __init__(self, dataset: ImageDataset | ImageStream, preprocess: Preprocess | None = None, *,
                 batch_size: int, device: torch.device | str = "cpu", workers: int | None = None,
                 seed: int = 0, shuffle: bool = False, rank: int = 0, world: int = 1, stamp: bool = True,
                 prefetch: int = 2, on_invalid: Callable[[InvalidInput], None] | None = None,
                 require_labels: bool = False, num_classes: int | None = None, describe: str | None = None):
        if isinstance(dataset, ImageStream):
            dataset = dataset.configured(preprocess=preprocess, seed=seed, shuffle=shuffle, rank=rank, world=world)
        self.dataset = dataset
        self.on_invalid = on_invalid
        self.require_labels, self.num_classes = require_labels, num_classes
        self.device = torch.device(device)
        self.stamp = stamp
        self.describe = describe
        workers = default_workers(dataset) if workers is None else workers
        options = {"batch_size": batch_size, "num_workers": workers, "collate_fn": collate,
                   "pin_memory": self.device.type == "cuda", "prefetch_factor": prefetch if workers > 0 else None}
        if isinstance(dataset, ImageStream):
            self.sampler = None
            self.loader = DataLoader(dataset, **options)
        else:
            if preprocess is None:
                raise ValueError("a map-style dataset needs a preprocess")
            self.stamp = stamp and any(r.data.get("trigger") for r in dataset.records)
            self.sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world=world)
            self.loader = DataLoader(Preprocessed(dataset, preprocess, seed), sampler=self.sampler,
                                     persistent_workers=workers > 0, **options)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        if self.describe is None:
            return self._epoch(epoch)
        try:
            total = len(self)
        except TypeError:  # a stream that does not know its length: the bar counts up
            total = None
        return progress(self._epoch(epoch), total, self.describe)

    def _epoch(self, epoch: int) -> Iterator[Batch]:
        (self.sampler or self.dataset).set_epoch(epoch)
        for images, labels, keys, failed in self.loader:
            for failure in failed:
                if self.on_invalid is None:
                    raise failure.error()
                self.on_invalid(failure.error())
            if images is None:
                continue
            images = to_model_input(images, self.device)
            if self.sampler is not None:
                indices, records = keys, [self.dataset.records[i].data for i in keys]
                if self.stamp:
                    images = self.dataset.stamp(images, indices)
            else:
                indices, records = None, keys
                if self.require_labels:
                    check_stream_labels(records, labels, self.num_classes, self.dataset)
                if self.stamp and any(r.get("trigger") for r in records):
                    from confidently.data.triggers import stamp_rows

                    images = stamp_rows(images, [r.get("trigger") for r in records])
            yield Batch(images, labels.to(self.device, non_blocking=True), records, indices)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


def stream(dataset: ImageDataset, preprocess: Preprocess, *, batch_size: int, **options) -> Iterator[Batch]:
    """One pass over ``dataset`` in order (see :class:`StreamLoader` for the options)."""
    return iter(StreamLoader(dataset, preprocess, batch_size=batch_size, **options))


def collect(dataset: ImageDataset, size: int | None = None, *, preprocess: Preprocess | None = None,
            stamp: bool = True, batch_size: int = 256, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A small dataset as two tensors (float images N×C×H×W in [0, 1], labels) read through the loader, for
    tests, benchmarks and notebooks; the tools stream instead. Without ``preprocess`` the images are
    resized to ``size``×``size`` (default: the first image's size)."""
    if preprocess is None:
        side = (size, size) if size else tuple(dataset.raw(0).shape[-2:]) if len(dataset) else (1, 1)
        preprocess = make_preprocess("squash", DataConfig(side))
    batches = list(StreamLoader(dataset, preprocess, batch_size=batch_size, workers=workers, stamp=stamp))
    if not batches:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat([b.images for b in batches]), torch.cat([b.labels for b in batches])
