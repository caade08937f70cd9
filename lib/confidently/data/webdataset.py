"""WebDataset tar shards as a streaming source: the sequential-read format for data that lives on
object stores, HTTP servers or slow disks, where a random access per image would be too slow.

A sample is the tar members sharing a key: one image (``jpg``, ``png``, ``webp``, ...), ``cls``
(the label, decimal text) and ``json`` (the record's fields: ``id``, ``split``, ``trigger``, ...).
The image bytes are decoded here with :func:`~confidently.io.images.decode_uint8`, so a packed
folder gives the pixels of the folder itself, and random preprocessing is seeded by (seed, id,
epoch) as for map-style data. ``dataset pack`` writes such shards with a ``pack.json`` beside
them, which gives the sample counts (for ``len``) and the class names.

Where the sample counts are known (a pack's sidecar), ranks split the epoch's sequence of samples
into contiguous, equal parts (±1 sample, as the map-style sampler does), each reading only the shards
its part spans; without counts they share the shards out when there are enough of them, else every
rank reads every shard and keeps its own samples. Loader workers then share out their rank's shards
(or, with fewer shards than workers, its samples). Either way each sample comes out exactly once
across ranks × workers per epoch, and a rank's share does not depend on its worker count.

Shuffling (``StreamLoader(..., shuffle=True)``, as for training) is what webdataset users expect of an
iterable: the shard order is drawn anew each epoch from (seed, epoch), and each reader passes its
samples through a bounded buffer (``buffer`` samples, still encoded) whose draws are seeded by
(seed, epoch, rank, worker). The order is therefore fixed by the seed, the rank count and the worker
count: the same seed, ranks and workers read the same order, a different worker count a different one
(each record's augmentation, seeded by (seed, id, epoch), stays the same either way).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import get_worker_info

from confidently.data.loader import Failed, ImageStream
from confidently.data.preprocess import Preprocess
from confidently.errors import InvalidInput
from confidently.io.images import decode_uint8
from confidently.run.seeding import derive_seed, record_generator

PACK_SIDECAR = "pack.json"
DEFAULT_BUFFER = 1000
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "gif", "tif", "tiff")
TAR_SUFFIX = re.compile(r"\.(tar|tgz|tar\.gz)$", re.IGNORECASE)
URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def read_sidecar(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The ``pack.json`` that ``dataset pack`` wrote in ``folder``, or None when there is none."""
    path = Path(folder) / PACK_SIDECAR
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return sidecar if isinstance(sidecar, dict) and isinstance(sidecar.get("shards"), list) else None


def is_webdataset(source: str | os.PathLike) -> bool:
    """Whether ``source`` names tar shards: a path or URL ending in .tar (brace patterns, ``pipe:``
    commands and ``::`` lists included) or a folder that ``dataset pack --format webdataset`` made."""
    text = str(source).strip()
    if TAR_SUFFIX.search(text):
        return True
    if URL_SCHEME.match(text) or not os.path.isdir(text):
        return False
    sidecar = read_sidecar(text)
    return sidecar is not None and sidecar.get("format") == "webdataset"


def expand_urls(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """The shard URLs of a source: braces and ``::`` lists expanded the way webdataset does."""
    from webdataset.shardlists import expand_urls as expand

    if isinstance(source, (str, os.PathLike)):
        return expand(str(source))
    return [url for item in source for url in expand(str(item))]


def _local_path(url: str) -> Path | None:
    if url.startswith("file:"):
        return Path(url[len("file:"):])
    return None if URL_SCHEME.match(url) else Path(url)


def _split_share(count: int, part: int, parts: int) -> tuple[list[int], tuple[int, int]]:
    """Which of ``count`` shards reader ``part`` of ``parts`` opens, and which of their samples it keeps.

    Enough shards: every ``parts``-th shard, all its samples. Too few: every shard, every ``parts``-th sample.
    """
    if count >= parts:
        return list(range(part, count, parts)), (0, 1)
    return list(range(count)), (part, parts)


def _contiguous_part(counts: Sequence[int], order: Sequence[int], part: int,
                     parts: int) -> list[tuple[int, int, int | None]]:
    """Part ``part`` of ``parts`` equal contiguous parts of the samples of the shards in ``order``, as
    ``(shard, first, stop)`` runs of sample positions within each shard it spans."""
    total = sum(counts)
    low, high = total * part // parts, total * (part + 1) // parts
    runs, offset = [], 0
    for shard in order:
        first, stop = max(low, offset), min(high, offset + counts[shard])
        if first < stop:
            runs.append((shard, first - offset, stop - offset))
        offset += counts[shard]
    return runs


class WebDatasetStream(ImageStream):
    """Tar shards as an :class:`ImageStream` of ``(preprocessed image, label, record fields)`` or :class:`Failed`.

    ``urls``: a path, a brace pattern (``shards-{000000..000009}.tar``), a ``pipe:`` command, an http(s)
    URL or a list of them. ``split`` keeps the samples whose ``split`` field equals it. ``shard_counts``
    (samples per shard, after the split) gives ``len`` and balanced rank parts, ``classes`` the class
    names, ``fingerprint`` the packed records' identity; all come from the pack's sidecar in
    :func:`open_stream`; ``name`` is what messages and summaries call the source. ``preprocess``, ``seed``,
    ``shuffle``, ``rank`` and ``world`` are set by the loader that reads the stream (see the module
    docstring for what ``shuffle`` and ``buffer`` do); unshuffled, shards are read in the order given.
    """

    def __init__(self, urls: str | os.PathLike | Sequence[str], preprocess: Preprocess | None = None, *,
                 seed: int = 0, channels: int | None = 3, rank: int = 0, world: int = 1, split: str | None = None,
                 shard_counts: Sequence[int] | None = None, classes: list[str] | None = None,
                 name: str | None = None, shuffle: bool = False, buffer: int = DEFAULT_BUFFER,
                 fingerprint: str | None = None):
        self.urls = expand_urls(urls)
        if not self.urls:
            raise InvalidInput(f"no shards in {urls!r}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        if shard_counts is not None and len(shard_counts) != len(self.urls):
            raise ValueError(f"{len(shard_counts)} shard counts for {len(self.urls)} shards")
        self.preprocess, self.seed, self.channels = preprocess, seed, channels
        self.rank, self.world, self.split = rank, world, split
        self.shuffle, self.buffer = shuffle, buffer
        self.shard_counts = list(shard_counts) if shard_counts is not None else None
        self.classes = classes
        self._fingerprint = fingerprint
        self.name = name or (self.urls[0] if len(self.urls) == 1 else f"{self.urls[0]} (+{len(self.urls) - 1} shards)")

    def __len__(self) -> int:
        """This rank's sample count (failed samples included), known from the pack's sidecar only."""
        if self.shard_counts is None:
            raise TypeError(f"the sample count of {self.name} is unknown (no {PACK_SIDECAR} lists these shards)")
        total = sum(self.shard_counts)
        return total * (self.rank + 1) // self.world - total * self.rank // self.world

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    def fingerprint(self) -> str | None:
        """The packed records' identity (as :meth:`ImageDataset.fingerprint` gives it for the data that was
        packed) when this stream reads the whole pack; None for other shards or a part of a pack."""
        return self._fingerprint

    def image_shape(self) -> tuple[int, ...]:
        """The stored shape (C, H, W) of the first sample's image, decoded."""
        for url in self.urls:
            for position, sample in enumerate(self._samples(url)):
                fields = sample if isinstance(sample, Failed) else self._fields(url, sample, position)
                if isinstance(fields, Failed):
                    raise fields.error()
                if self.split is None or fields.get("split") == self.split:
                    return tuple(self._decode(url, sample, fields, position).shape)
        raise InvalidInput(f"{self.name} has no samples" + (f" with \"split\": \"{self.split}\"" if self.split else ""))

    def image_size(self) -> int:
        """The size to build a model for when none is given: the first image's shorter side."""
        return int(min(self.image_shape()[-2:]))

    def shard_order(self) -> list[int]:
        """The shards in the order this epoch reads them: as given, or shuffled by (seed, epoch)."""
        if not self.shuffle:
            return list(range(len(self.urls)))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "shards", self.epoch))
        return torch.randperm(len(self.urls), generator=generator).tolist()

    def _runs(self, worker: int, workers: int) -> tuple[list[tuple[int, int, int | None]], tuple[int, int]]:
        """What this reader reads: ``(shard, first, stop)`` runs of sample positions, and ``(keep, every)``:
        it keeps every ``every``-th of those samples from ``keep``."""
        order = self.shard_order()
        if self.shard_counts is not None:
            runs, keep = _contiguous_part(self.shard_counts, order, self.rank, self.world), (0, 1)
        else:
            shards, keep = _split_share(len(order), self.rank, self.world)
            runs = [(order[i], 0, None) for i in shards]
        if keep[1] == 1:
            picked, keep = _split_share(len(runs), worker, workers)
            return [runs[i] for i in picked], keep
        return runs, (keep[0] + keep[1] * worker, keep[1] * workers)  # ranks split samples: workers further

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, dict[str, Any]] | Failed]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        runs, (keep, every) = self._runs(worker, workers)
        for item in self._buffered(self._kept(runs, keep, every), worker):
            if isinstance(item, Failed):
                yield item
            else:
                yield self._item(*item)

    def _kept(self, runs: list[tuple[int, int, int | None]], keep: int,
              every: int) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], int] | Failed]:
        """This reader's samples, still encoded: ``(url, sample, fields, position)``, or Failed. A shard that
        cannot be read is reported by the reader whose sample was next (once across readers)."""
        seen = 0
        for shard, first, stop in runs:
            url = self.urls[shard]
            counted = 0
            for position, sample in enumerate(self._samples(url)):
                if isinstance(sample, Failed):
                    if counted >= first and seen % every == keep:
                        yield sample
                    break
                fields = self._fields(url, sample, position)
                if self.split is not None and not isinstance(fields, Failed) and fields.get("split") != self.split:
                    continue
                counted += 1
                if counted <= first:
                    continue
                seen += 1
                if (seen - 1) % every == keep:
                    yield fields if isinstance(fields, Failed) else (url, sample, fields, position)
                if stop is not None and counted >= stop:
                    break

    def _buffered(self, items: Iterable, worker: int) -> Iterator:
        """``items`` as they come, or shuffled through a buffer of ``buffer`` items seeded by (seed, epoch,
        rank, worker) when the stream shuffles."""
        if not self.shuffle or self.buffer <= 1:
            yield from items
            return
        draws = random.Random(derive_seed(self.seed, "buffer", self.epoch, self.rank, worker))
        pool: list = []
        for item in items:
            if len(pool) < self.buffer:
                pool.append(item)
                continue
            slot = draws.randrange(len(pool))
            yield pool[slot]
            pool[slot] = item
        draws.shuffle(pool)
        yield from pool

    def _samples(self, url: str) -> Iterator[dict[str, Any] | Failed]:
        """The raw samples (``__key__`` and member bytes) of one shard; a shard that cannot be read ends in Failed.

        webdataset's opener (files, ``pipe:``, http through curl) and tar reader, with the stream closed here
        when the shard ends or the reader stops early (webdataset's own pipeline leaves that to the collector).
        """
        from webdataset import gopen
        from webdataset.tariterators import group_by_keys, tar_file_expander

        problems: list[Exception] = []

        def note(exc: Exception) -> bool:
            problems.append(exc)
            return False  # stop reading this shard

        try:
            with gopen(url, "rb") as stream:
                yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}], handler=note),
                                         handler=note)
        except Exception as exc:  # noqa: BLE001 - whatever the opener raises, this shard could not be read
            problems.append(exc)
        if problems:
            problem = problems[0]
            reason = problem.strerror if isinstance(problem, OSError) and problem.strerror else (
                problem.args[0] if problem.args else type(problem).__name__)
            yield Failed(-1, f"cannot read this WebDataset shard ({reason})", url, None, None, None)

    def _fields(self, url: str, sample: dict[str, Any], position: int) -> dict[str, Any] | Failed:
        """The record of a sample: its ``json`` object, the label from ``cls``, the tar key as a fallback id."""
        key = sample["__key__"]
        fields: dict[str, Any] = {}
        for member in ("json", "cls"):
            if member not in sample:
                continue
            try:
                if member == "json":
                    fields = json.loads(sample["json"])
                    if not isinstance(fields, dict):
                        raise ValueError("expected a JSON object")
                else:
                    fields["label"] = int(sample["cls"].decode().strip())
            except (ValueError, UnicodeDecodeError) as exc:
                return Failed(position, f"{member} member of sample {key!r} is not valid ({exc}): {url}", url, None,
                              member, str(fields.get("id", key)))
        fields["id"] = str(fields.get("id", key))
        return fields

    def _decode(self, url: str, sample: dict[str, Any], fields: dict[str, Any], position: int) -> torch.Tensor:
        """The sample's image as stored (uint8 C×H×W); InvalidInput when it has none or it does not decode."""
        member = next((name for name in IMAGE_MEMBERS if name in sample), None)
        try:
            if member is None:
                raise InvalidInput(f"sample {sample['__key__']!r} has no image member (expected one of "
                                   f"{', '.join(IMAGE_MEMBERS)}; it has "
                                   f"{', '.join(k for k in sorted(sample) if not k.startswith('__')) or 'none'})")
            return decode_uint8(sample[member], self.channels, name=f"{url}:{sample['__key__']}.{member}")
        except InvalidInput as exc:
            raise InvalidInput(exc.message, source=url, field="image", record_id=fields["id"]) from None

    def _item(self, url: str, sample: dict[str, Any], fields: dict[str, Any],
              position: int) -> tuple[torch.Tensor, int, dict[str, Any]] | Failed:
        record_id = fields["id"]
        try:
            image = self._decode(url, sample, fields, position)
        except InvalidInput as exc:
            return Failed(position, exc.message, url, None, "image", record_id)
        generator = record_generator(self.seed, record_id, "augment", self.epoch) if self.preprocess.random else None
        return self.preprocess(image, generator), int(fields.get("label", -1)), fields


def open_stream(source: str | os.PathLike | Sequence[str], split: str | None = None, *, channels: int | None = 3,
                preprocess: Preprocess | None = None, buffer: int = DEFAULT_BUFFER) -> WebDatasetStream:
    """Tar shards (see :func:`is_webdataset`) as a stream for :class:`~confidently.data.loader.StreamLoader`
    (which gives it its preprocess, seed, shuffle and rank unless ``preprocess`` is set here).

    A folder made by ``dataset pack`` is read through its sidecar (its shards, counts, classes and
    fingerprint; an unfinished pack is refused). Local shards listed in a sidecar beside them get its
    counts and classes too.
    """
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        folder = Path(source)
        sidecar = read_sidecar(folder)
        if sidecar is None or sidecar.get("format") != "webdataset":
            raise InvalidInput(f"{folder} is not a WebDataset pack (no {PACK_SIDECAR} with \"format\": \"webdataset\")")
        if not sidecar.get("complete"):
            raise InvalidInput(f"{folder} holds an unfinished pack; run `dataset pack` again to finish it")
        urls = [str(folder / shard["name"]) for shard in sidecar["shards"]]
    else:
        urls = expand_urls(source)
        sidecar = _sidecar_listing(urls)
    counts = None
    fingerprint = None
    if sidecar is not None:
        listed = {shard["name"]: shard for shard in sidecar["shards"]}
        names = [Path(url).name for url in urls]
        if split is None:
            counts = [listed[name]["count"] for name in names]
        elif all("splits" in listed[name] for name in names):
            counts = [listed[name]["splits"].get(split, 0) for name in names]
        if split is not None and counts is not None and not sum(counts):
            raise InvalidInput(f"{source} has no samples with \"split\": \"{split}\"", field="split")
        if counts is not None and sum(counts) == sidecar.get("count"):  # every packed record
            fingerprint = sidecar.get("fingerprint")
    return WebDatasetStream(urls, preprocess, channels=channels, split=split, shard_counts=counts,
                            classes=sidecar.get("classes") if sidecar else None, buffer=buffer,
                            fingerprint=fingerprint,
                            name=str(source) if isinstance(source, (str, os.PathLike)) else None)


def _sidecar_listing(urls: list[str]) -> dict[str, Any] | None:
    """The sidecar of a pack that lists every one of these local shards, if they all lie in its folder."""
    paths = [_local_path(url) for url in urls]
    if any(path is None for path in paths) or len({path.parent for path in paths}) != 1:
        return None
    sidecar = read_sidecar(paths[0].parent)
    if sidecar is None or sidecar.get("format") != "webdataset":
        return None
    listed = {shard.get("name") for shard in sidecar["shards"]}
    return sidecar if all(path.name in listed for path in paths) else None
