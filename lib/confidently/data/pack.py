"""Whole-dataset passes through the loader's workers: pack a dataset into shards, and describe one.

:func:`pack` writes any dataset as uint8 shards of bounded size into a folder, for reading at
scale: WebDataset tars (sequential reads from disks, object stores, HTTP) or safetensors shards
(memory-mapped random access, equal image shapes). Workers decode (which also checks every image),
resize and encode; the main process appends to one shard at a time, so memory stays a few
batches. Each shard is written atomically and listed in ``OUT/pack.json`` when done, so a rerun
keeps the finished shards and goes on after them.

:func:`describe` is ``dataset info``: counts, classes and image shapes of a map-style dataset or
a stream, decoding in the workers without holding the images.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from confidently import __version__
from confidently.data.dataset import ImageDataset, shard_dataset
from confidently.data.loader import Failed, ImageStream, StreamLoader, default_workers
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.data.webdataset import IMAGE_MEMBERS, PACK_SIDECAR, read_sidecar
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.io.artifacts import artifact_metadata
from confidently.io.atomic import (
    atomic_write,
    claim_folder,
    record_folder_files,
    remove_stale_temporaries,
    write_bytes_atomic,
)
from confidently.io.records import Record, rebase_refs
from confidently.io.shard_writer import ShardWriter
from confidently.run.console import progress

TOOL = "dataset"
FORMATS = {"webdataset": ".tar", "safetensors": ".safetensors"}
SHARD_FILE = re.compile(r"^shard-\d{6}\.(tar|safetensors)$")
DEFAULT_SHARD_BYTES = 500 * 2**20
TAR_BLOCK = 512


def fit_image(image: torch.Tensor, size: int, crop: bool) -> torch.Tensor:
    """The shorter side resized to ``size`` (aspect kept); with ``crop``, then the centre ``size``×``size``
    (the eval preprocess at ``crop_pct`` 1, so a model at that size sees the same pixels either way)."""
    if crop:
        return make_preprocess("eval", DataConfig((size, size)))(image)
    short, long = sorted(image.shape[-2:])
    target = (size, max(size, round(size * long / short)))
    return make_preprocess("squash", DataConfig(target if image.shape[-2] <= image.shape[-1] else target[::-1]))(image)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Stored pixels as uint8 (float pixels in [0, 1] rounded to the nearest level)."""
    return image if image.dtype == torch.uint8 else image.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def png_bytes(image: torch.Tensor) -> bytes:
    """A uint8 C×H×W image as lossless PNG bytes."""
    from PIL import Image

    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class PackedSample:
    """One record's stored form, made in a worker: encoded bytes and their tar member name, or a uint8 tensor."""

    position: int
    payload: bytes | torch.Tensor
    member: str | None
    shape: tuple[int, ...]


class PackSamples(Dataset):
    """The records of a dataset in their stored form, or :class:`Failed` for an image that does not decode.

    Without a ``size``, a file goes into a tar as its own bytes (the same pixels once decoded, at no
    re-encoding cost); anything else is encoded as PNG, or kept as a tensor for safetensors shards.
    """

    def __init__(self, dataset: ImageDataset, *, as_tensors: bool, size: int | None, crop: bool):
        self.dataset, self.as_tensors, self.size, self.crop = dataset, as_tensors, size, crop

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> PackedSample | Failed:
        record = self.dataset.records[position]
        try:
            image = to_uint8(self.dataset.raw(position))
            if self.size is not None:
                image = fit_image(image, self.size, self.crop)
            shape = tuple(image.shape)
            if self.as_tensors:
                return PackedSample(position, image, None, shape)
            ref = record.data.get("image")
            suffix = Path(ref).suffix.lower().lstrip(".") if isinstance(ref, str) else ""
            if self.size is None and suffix in IMAGE_MEMBERS:
                path = os.path.join(record.base_dir, os.path.expanduser(ref))
                try:
                    return PackedSample(position, Path(path).read_bytes(), suffix, shape)
                except OSError as exc:
                    raise InvalidInput(f"cannot read image file ({exc.strerror}): {path}") from None
            return PackedSample(position, png_bytes(image), "png", shape)
        except InvalidInput as exc:
            return Failed(position, exc.message, record.source, record.line, "image", record.id)


def _as_list(samples: list) -> list:
    return samples


def _tar_size(payload_sizes: list[int]) -> int:
    return sum(TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK for size in payload_sizes)


class ShardBuilder(ABC):
    """One shard being written: the bookkeeping of its records; subclasses store the samples."""

    def __init__(self, path: Path, start: int):
        self.path, self.start = path, start
        self.count = self.nbytes = 0
        self.ids: list[str] = []
        self.splits: Counter = Counter()

    @staticmethod
    @abstractmethod
    def cost(sample: PackedSample, fields: bytes) -> int:
        """About how many bytes ``sample`` adds to a shard."""

    def fits(self, cost: int, max_bytes: int, max_count: int | None) -> bool:
        """Whether a sample of ``cost`` bytes joins this shard (the first always does)."""
        return not self.count or (self.nbytes + cost <= max_bytes and (max_count is None or self.count < max_count))

    def add(self, sample: PackedSample, label: int, fields: dict[str, Any], encoded: bytes, cost: int) -> None:
        self.write(sample, label, fields, encoded)
        self.count += 1
        self.nbytes += cost
        self.ids.append(fields["id"])
        if fields.get("split"):
            self.splits[fields["split"]] += 1

    @abstractmethod
    def write(self, sample: PackedSample, label: int, fields: dict[str, Any], encoded: bytes) -> None: ...

    @abstractmethod
    def close(self, classes: list[str] | None, settings: dict[str, Any]) -> None:
        """Finish the shard: it appears under its name, whole."""

    @abstractmethod
    def discard(self) -> None:
        """Drop the unfinished shard (called while the error that stopped it propagates)."""

    def entry(self, end: int) -> dict[str, Any]:
        """The shard's line in the sidecar; ``end`` is the dataset position the next shard starts from."""
        return {"name": self.path.name, "count": self.count, "bytes": self.path.stat().st_size, "start": self.start,
                "end": end, "splits": dict(sorted(self.splits.items())), "first_id": self.ids[0],
                "last_id": self.ids[-1]}


class TarShard(ShardBuilder):
    """A WebDataset tar: ``KEY.<image>``, ``KEY.cls`` (when labelled) and ``KEY.json`` per sample, written
    straight into the temporary file that becomes the shard (fixed mtimes: the same input gives the same bytes)."""

    def __init__(self, path: Path, start: int):
        from webdataset import TarWriter

        super().__init__(path, start)
        self._stack = contextlib.ExitStack()
        handle = self._stack.enter_context(atomic_write(path))
        self._tar = TarWriter(handle, encoder=False, mtime=0, user="confidently", group="confidently")

    @staticmethod
    def cost(sample: PackedSample, fields: bytes) -> int:
        return _tar_size([len(sample.payload), len(fields), 8])

    def write(self, sample: PackedSample, label: int, fields: dict[str, Any], encoded: bytes) -> None:
        member = {"__key__": f"{sample.position:09d}", sample.member: sample.payload, "json": encoded}
        if label >= 0:
            member["cls"] = str(label).encode()
        self._tar.write(member)

    def close(self, classes: list[str] | None, settings: dict[str, Any]) -> None:
        self._tar.close()
        self._stack.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._tar.close()  # its last buffer goes to the temporary file now, not to a closed file when collected
        self._stack.__exit__(*sys.exc_info())


class TensorShard(ShardBuilder):
    """A safetensors shard as ``shard_dataset`` reads it: ``images`` uint8 N×C×H×W, ``labels``, metadata
    ``ids`` and ``classes``, plus ``fields`` (each record's other fields) for :func:`open_pack`."""

    def __init__(self, path: Path, start: int):
        super().__init__(path, start)
        self._writer = ShardWriter(path)
        self._fields: list[dict[str, Any]] = []

    @staticmethod
    def cost(sample: PackedSample, fields: bytes) -> int:
        return sample.payload.numel() + 8 + len(fields)

    def write(self, sample: PackedSample, label: int, fields: dict[str, Any], encoded: bytes) -> None:
        self._writer.append(images=sample.payload[None], labels=torch.tensor([label], dtype=torch.long))
        self._fields.append({key: value for key, value in fields.items() if key != "id"})

    def close(self, classes: list[str] | None, settings: dict[str, Any]) -> None:
        self._writer.close(artifact_metadata(tool=TOOL, kind="shard", config=settings, ids=self.ids, classes=classes,
                                             fields=self._fields))

    def discard(self) -> None:
        self._writer.discard()


BUILDERS: dict[str, type[ShardBuilder]] = {"webdataset": TarShard, "safetensors": TensorShard}


def _record_fields(record: Record, label: int, classes: list[str] | None, out: Path,
                   split: str | None) -> dict[str, Any]:
    """What a shard keeps of a record besides its image and label: its other fields (paths now from ``out``)."""
    fields = rebase_refs({key: value for key, value in record.data.items() if key not in ("image", "label")},
                         record.base_dir, out)
    if split:
        fields.setdefault("split", split)
    if label >= 0 and classes:
        fields.setdefault("class_name", classes[label])
    return fields


def _summary(entry: dict[str, Any], out: Path, shard_format: str) -> dict[str, Any]:
    return {"shard": entry["name"], "path": str(out / entry["name"]), "format": shard_format, "count": entry["count"],
            "bytes": entry["bytes"], "first_id": entry["first_id"], "last_id": entry["last_id"]}


def _kept_shards(out: Path, previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The finished shards of an earlier run that are still whole (listed, present, of the recorded size)."""
    kept = []
    for entry in (previous or {}).get("shards", []):
        path = out / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            break
        kept.append(entry)
    return kept


def _refuse_foreign(out: Path, owned: set[str]) -> None:
    for name in sorted(os.listdir(out)):
        if (SHARD_FILE.match(name) or name == PACK_SIDECAR) and name not in owned:
            raise UsageError(f"{out / name}: an existing file that {TOOL} did not write; choose another --out or "
                             "pass --force to write over it")


def pack(dataset: ImageDataset, out: str | os.PathLike, *, format: str = "webdataset", size: int | None = None,
         crop: bool = False, max_bytes: int = DEFAULT_SHARD_BYTES, max_count: int | None = None,
         split: str | None = None, workers: int | None = None, force: bool = False,
         on_invalid: Callable[[InvalidInput], None] | None = None,
         on_shard: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Write ``dataset`` into ``out`` as shards of about ``max_bytes`` (and at most ``max_count`` records) each.

    ``format``: ``webdataset`` (tars; without ``size``, files keep their own bytes, else PNG) or
    ``safetensors`` (uint8 tensors; needs equal shapes, e.g. ``size`` with ``crop``). ``size``: the shorter
    side resized to it; ``crop``: then the centre ``size``×``size``. ``split`` names the split the records
    are (stored where a record has none). An image that does not decode raises :class:`InvalidInput`, or
    goes to ``on_invalid`` and is left out. ``on_shard`` gets each shard's summary when it is done, kept
    shards of an earlier run with the same settings included; returns all the summaries.

    ``out`` must be new, empty or an earlier output of ``dataset`` (``force``: write anyway, and repack
    from the start). A finished pack of other data or settings is refused unless forced; an unfinished
    one is replaced.
    """
    if format not in FORMATS:
        raise UsageError(f"--format {format!r}: choose {' or '.join(FORMATS)}")
    if crop and size is None:
        raise UsageError("--crop needs --size S (the side of the square crop)")
    if size is not None and size < 1 or max_bytes < 1 or max_count is not None and max_count < 1:
        raise UsageError("--size, --shard-size and --shard-count must be positive")
    if not len(dataset):
        raise InvalidInput(f"{dataset.name} has no records to pack")
    out = Path(out)
    started = time.time()
    settings = {"format": format, "size": size, "crop": crop, "max_bytes": max_bytes, "max_count": max_count,
                "channels": dataset.channels, "split": split, "records": len(dataset),
                "fingerprint": dataset.fingerprint()}
    owned = set(claim_folder(out, TOOL, force=force)["files"])
    if not force:
        _refuse_foreign(out, owned)
    previous = read_sidecar(out) if PACK_SIDECAR in owned and not force else None
    if previous is not None and not previous.get("complete") and {k: previous.get(k) for k in settings} != settings:
        previous = None  # an unfinished pack of other settings (say, one that needed --size): start afresh
    if previous is not None and {key: previous.get(key) for key in settings} != settings:
        changed = ", ".join(f"{key} {previous.get(key)!r} → {value!r}" for key, value in settings.items()
                            if previous.get(key) != value)
        raise UsageError(f"{out} holds a pack made from other data or settings ({changed}); choose another --out "
                         "or pass --force to repack")
    shards = _kept_shards(out, previous)
    start = shards[-1]["end"] if shards else 0
    errors = [error for error in (previous or {}).get("errors", []) if error["position"] < start]
    shape = previous.get("shape") if shards else None
    summaries: list[dict[str, Any]] = []

    def report(entry: dict[str, Any]) -> None:
        summaries.append(_summary(entry, out, format))
        if on_shard is not None:
            on_shard(summaries[-1])

    def invalid(error: InvalidInput) -> None:
        if on_invalid is None:
            raise error
        on_invalid(error)

    def save_sidecar(complete: bool) -> None:
        sidecar = {"tool": TOOL, "kind": "pack", "version": __version__, **settings, "source": dataset.name,
                   "classes": dataset.classes, "shape": shape, "complete": complete,
                   "count": sum(entry["count"] for entry in shards), "shards": shards, "errors": errors}
        write_bytes_atomic(out / PACK_SIDECAR, (json.dumps(sidecar, indent=1) + "\n").encode())

    def claim(name: str) -> Path:
        owned.add(name)
        record_folder_files(out, TOOL, sorted(owned))
        remove_stale_temporaries(out / name, started)
        return out / name

    for entry in shards:  # what an earlier run finished: the same output again, nothing rewritten
        for error in errors:
            if entry["start"] <= error["position"] < entry["end"]:
                invalid(InvalidInput(error["error"], record_id=error["id"]))
        report(entry)
    if start == len(dataset):
        return summaries
    claim(PACK_SIDECAR)
    save_sidecar(complete=False)
    items = DataLoader(PackSamples(dataset, as_tensors=format == "safetensors", size=size, crop=crop),
                       sampler=range(start, len(dataset)), batch_size=8, collate_fn=_as_list,
                       num_workers=default_workers(dataset) if workers is None else workers)
    builder_type = BUILDERS[format]
    builder: ShardBuilder | None = None
    try:
        for sample in progress((s for batch in items for s in batch), len(dataset) - start, "packing"):
            if isinstance(sample, Failed):
                errors.append({"position": sample.index, "id": sample.record_id, "error": sample.error().describe()})
                invalid(sample.error())
                continue
            if format == "safetensors":
                if shape is not None and list(sample.shape) != shape:
                    raise UsageError(f"safetensors shards need images of one shape: "
                                     f"{dataset.records[sample.position].id} is {'×'.join(map(str, sample.shape))}, "
                                     f"earlier ones {'×'.join(map(str, shape))}; pass --size S --crop")
                shape = list(sample.shape)
            label = dataset.label(sample.position)
            fields = _record_fields(dataset.records[sample.position], label, dataset.classes, out, split)
            encoded = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
            cost = builder_type.cost(sample, encoded)
            if builder is not None and not builder.fits(cost, max_bytes, max_count):
                builder.close(dataset.classes, settings)
                shards.append(builder.entry(end=sample.position))
                builder = None
                save_sidecar(complete=False)
                report(shards[-1])
            if builder is None:
                builder = builder_type(claim(f"shard-{len(shards):06d}{FORMATS[format]}"),
                                       start=shards[-1]["end"] if shards else start)
            builder.add(sample, label, fields, encoded, cost)
        if builder is not None:
            builder.close(dataset.classes, settings)
    except BaseException:
        if builder is not None:
            builder.discard()
        raise
    if builder is not None:
        shards.append(builder.entry(end=len(dataset)))
    elif shards:
        shards[-1]["end"] = len(dataset)  # what came after the last shard of an earlier run was all invalid
    else:
        raise NoValidResult(f"all {len(dataset)} records of {dataset.name} were invalid; nothing was packed")
    save_sidecar(complete=True)
    if builder is not None:
        report(shards[-1])
    _remove_stale_shards(out, owned, {entry["name"] for entry in shards})
    return summaries


def _remove_stale_shards(out: Path, owned: set[str], current: set[str]) -> None:
    """Remove shards this tool wrote in ``out`` for an earlier pack that the new one does not list."""
    stale = {name for name in owned if SHARD_FILE.match(name) and name not in current}
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    if stale:
        record_folder_files(out, TOOL, sorted(owned - stale))


def open_pack(folder: str | os.PathLike, split: str | None = None, *, channels: int | None = 3,
              classes: list[str] | None = None) -> ImageDataset:
    """A folder of safetensors shards made by :func:`pack` as one dataset (each record a row of its shard,
    with the fields it had when packed); ``split`` keeps the records whose ``split`` field equals it, and
    ``classes`` overrides the class names the pack recorded."""
    folder = Path(folder)
    sidecar = read_sidecar(folder)
    if sidecar is None:
        raise InvalidInput(f"{folder / PACK_SIDECAR} is not a pack sidecar written by `dataset pack`")
    if sidecar.get("format") != "safetensors":
        raise InvalidInput(f"{folder} holds WebDataset shards: read them as a stream "
                           "(confidently.data.webdataset.open_stream)")
    if not sidecar.get("complete"):
        raise InvalidInput(f"{folder} holds an unfinished pack; run `dataset pack` again to finish it")
    from confidently.io.artifacts import load_artifact_metadata

    records: list[Record] = []
    for entry in sidecar["shards"]:
        path = folder / entry["name"]
        shard = shard_dataset(path, channels)
        extra = load_artifact_metadata(path).get("fields") or [{}] * len(shard)
        for record, fields in zip(shard.records, extra, strict=True):
            record.data = {**fields, **record.data}
            if split is None or record.data.get("split") == split:
                records.append(record)
    if split is not None and not records:
        raise InvalidInput(f"{folder} has no records with \"split\": \"{split}\"", field="split")
    return ImageDataset(records, name=str(folder), classes=classes or sidecar.get("classes"), channels=channels)


class ImageShape:
    """A stand-in preprocess that turns each image into its shape, so a pass through the loader's workers
    measures images without carrying them."""

    random = False

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tensor(list(image.shape))


def describe(source: ImageDataset | ImageStream, *, decode: bool = True, workers: int | None = None,
             batch_size: int = 64, on_invalid: Callable[[InvalidInput], None] | None = None) -> dict[str, Any]:
    """Counts, classes, splits and image shapes (the ``dataset-info`` record), decoding in the loader's workers.

    A map-style dataset is counted from its records; a stream is counted as it is read (its failed
    samples count, but not towards classes or splits). An image that does not decode raises
    :class:`InvalidInput`, or goes to ``on_invalid`` and is left out of the shapes.
    """
    shapes: Counter = Counter()
    if isinstance(source, ImageDataset):
        if not decode or source.images is not None:
            return source.info(decode=decode, on_invalid=on_invalid)
        summary = source.info(decode=False)
        for batch in StreamLoader(source, ImageShape(), batch_size=batch_size, workers=workers, stamp=False,
                                  on_invalid=on_invalid, describe="reading images"):
            shapes.update(tuple(row) for row in batch.images.long().tolist())
        summary["shapes"] = [{"shape": list(shape), "count": count} for shape, count in shapes.most_common()]
        return summary
    stream = copy.copy(source)
    stream.preprocess = ImageShape()
    failed = 0

    def count_failure(error: InvalidInput) -> None:
        nonlocal failed
        failed += error.record_id is not None
        if on_invalid is None:
            raise error
        on_invalid(error)

    labels: Counter = Counter()
    splits: Counter = Counter()
    for batch in StreamLoader(stream, batch_size=batch_size, workers=workers, stamp=False, on_invalid=count_failure,
                              describe="reading images"):
        shapes.update(tuple(row) for row in batch.images.long().tolist())
        labels.update(int(label) for label in batch.labels)
        splits.update(record["split"] for record in batch.records if record.get("split"))
    known = [label for label in labels if label >= 0]
    classes = getattr(stream, "classes", None) or ([str(i) for i in range(max(known) + 1)] if known else None)
    return {"name": getattr(stream, "name", type(stream).__name__), "count": sum(labels.values()) + failed,
            "num_classes": len(classes) if classes else 0, "classes": classes,
            "per_class": {str(k): labels[k] for k in sorted(known)}, "unlabelled": labels[-1],
            "splits": dict(sorted(splits.items())),
            "shapes": [{"shape": list(shape), "count": count} for shape, count in shapes.most_common()]}
