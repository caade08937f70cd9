"""`dataset`: export any dataset source to files + manifest, pack it into shards, describe it, split it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from confidently.cli import Common, common_options, examples, input_source, run_app, stream_records, tool_app
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.io.atomic import atomic_write, claim_folder
from confidently.io.records import Collector, Record, RecordWriter, dumps_record, error_record, file_stem, rebase_refs
from confidently.run.console import console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from confidently.data.dataset import ImageDataset

# torch, numpy and confidently.data load inside the commands, so --help starts in a blink

app = tool_app("dataset", "Bundled datasets and exports: any source to image files + a JSONL manifest.")

class Exporter:
    """Writes one record's image under ``out`` and returns its manifest record."""

    def __init__(self, dataset: ImageDataset, out: Path, image_format: str, size: int | None = None,
                 crop: bool = False):
        self.dataset = dataset
        self.out = out
        self.suffix = ".png" if image_format == "png" else ".jpg"
        self.size, self.crop = size, crop
        self.index = {record.id: i for i, record in enumerate(dataset.records)}

    def __call__(self, record: Record) -> dict[str, Any]:
        from confidently.data.pack import fit_image
        from confidently.io.images import as_float, save_image

        index = self.index[record.id]
        image = self.dataset.raw(index)
        image = as_float(fit_image(image, self.size, self.crop) if self.size else image)
        label = int(self.dataset.labels[index])
        folder = self.out / file_stem(self.dataset.classes[label]) if label >= 0 and self.dataset.classes else self.out
        path = folder / (file_stem(record.id) + self.suffix)
        save_image(image, path)
        data = rebase_refs({key: value for key, value in record.data.items() if key != "image"},
                           record.base_dir, Path.cwd())  # a mask still points at its file, now from here
        data["image"] = str(path)  # as --out was given: relative to the working directory, or absolute
        if label >= 0 and self.dataset.classes:
            data.setdefault("class_name", self.dataset.classes[label])
        return data


@app.command(epilog=examples("""
    # 16 test digits as PNG files in digits/, their manifest on stdout
    dataset export demo:digits --split test --limit 16 --out digits > digits.jsonl
    # photos at 64 px (shorter side), centre-cropped, as JPEG, from the bundled photo set
    dataset export demo:photos --size 64 --crop --format jpg --limit 4 --out photos > photos.jsonl
    # two 5-class tasks' worth of procedural shapes (first three records shown)
    dataset export "demo:shapes?classes=10&per_class=20" --out shapes | head -3
"""))
@common_options(uses={"shard", "engine", "address", "skip_invalid"})
def export(source: str = typer.Argument(..., help="Manifest, image folder, .safetensors shard, demo:NAME or -."),
           out: Path = typer.Option(..., "--out", help="Folder for the image files (created)."),
           split: str = typer.Option(None, "--split", help="Only this split (train, test, ...)."),
           limit: int = typer.Option(None, "--limit", min=0, help="Only the first N records."),
           image_format: str = typer.Option("png", "--format", help="png (lossless) or jpg."),
           size: int = typer.Option(None, "--size", min=1, help="Resize the shorter side to S pixels."),
           crop: bool = typer.Option(False, "--crop", help="With --size: then crop the centre S×S."),
           force: bool = typer.Option(False, "--force", help="Export into a non-empty folder dataset did not make."),
           *, common: Common) -> None:
    """Write the images of SOURCE under --out and their manifest (JSONL) to stdout.

    Labelled images go to OUT/<class>/, so OUT is also an image folder dataset. Without
    --shard, OUT/manifest.jsonl is written too, with paths relative to OUT.
    """
    from confidently.data import open_dataset

    if image_format not in ("png", "jpg"):
        raise UsageError(f"--format {image_format!r}: choose png or jpg")
    if crop and size is None:
        raise UsageError("--crop needs --size S (the side of the square crop)")
    invalid: list[InvalidInput] = []
    dataset = open_dataset(input_source(source, "a manifest") if source == "-" else source, split,
                           on_invalid=invalid.append if common.skip_invalid else None)
    items = sorted([*dataset.records, *invalid], key=lambda item: item.line)  # bad lines keep their place
    records = items[:limit] if limit is not None else items
    if not records:
        raise NoValidResult(f"{dataset.name} has no records to export")
    claim_folder(out, "dataset", force=force)  # after the input is read: bad input leaves no folder behind
    exporter = Exporter(dataset, out, image_format, size, crop)
    tee = Collector(stream=sys.stdout)
    stream_records(records, exporter, common, tee, total=len(records), description="exporting")
    if common.shard.count == 1:
        with atomic_write(out / "manifest.jsonl", "w") as handle:
            for record in tee.kept:
                if "error" not in record:
                    handle.write(dumps_record(rebase_refs(record, Path.cwd(), out)) + "\n")
    console.log(f"exported {sum('error' not in r for r in tee.kept)} images to {out}")


@app.command(epilog=examples("""
    # what a manifest holds: counts per split and label, image sizes (JSON on stdout, a table on stderr)
    dataset info digits.jsonl
    # a bundled set without writing files; a manifest's records only, no image decoded (fast)
    dataset info demo:digits --split train
    dataset info photos.jsonl --no-decode
"""))
@common_options(uses={"skip_invalid", "workers"})
def info(source: str = typer.Argument(None, help="Manifest, image folder, .safetensors shard, tar shards (path, "
                                                 "brace pattern or URL ending .tar; pack folder), demo:NAME or -."),
         split: str = typer.Option(None, "--split", help="Only this split."),
         decode: bool = typer.Option(True, "--decode/--no-decode",
                                     help="Decode every image (checks them, reports shapes)."),
         *, common: Common) -> None:
    """Counts, classes, splits and image shapes of a dataset, as one JSON object on stdout.

    Images are decoded by --workers processes, one batch at a time.
    """
    text = input_source(source, "a manifest")
    from confidently.data import open_dataset
    from confidently.data.pack import ImageShape, describe
    from confidently.data.webdataset import is_webdataset, open_stream

    invalid: list[InvalidInput] = []
    on_invalid = invalid.append if common.skip_invalid else None
    if is_webdataset(text):
        if not decode:
            raise UsageError("--no-decode: tar shards have no index, so they are read whole to be counted; "
                             "drop --no-decode")
        data = open_stream(text, split, preprocess=ImageShape())
    else:
        data = open_dataset(text, split, on_invalid=on_invalid)
    summary = describe(data, decode=decode, workers=common.workers, on_invalid=on_invalid)
    if invalid:
        console.print(f"[yellow]note:[/] skipped {len(invalid)} invalid records (--skip-invalid); "
                      f"the first: {escape(str(invalid[0]))}")
    sys.stdout.write(json.dumps(summary, separators=(",", ":")) + "\n")
    table = Table(title=summary["name"], show_header=False)
    table.add_row("records", str(summary["count"]))
    table.add_row("classes", str(summary["num_classes"]))
    table.add_row("splits", ", ".join(f"{k}: {v}" for k, v in summary["splits"].items()) or "-")
    shapes = ", ".join(f"{'×'.join(map(str, s['shape']))} ({s['count']})" for s in summary["shapes"])
    table.add_row("shapes", shapes or "-")
    console.print(table)


@app.command(epilog=examples("""
    # WebDataset tars of the test digits, at most 100 images per shard (original bytes kept)
    dataset pack demo:digits --split test --shard-count 100 --out digits-tars
    dataset info digits-tars
    # a manifest from stdin, resized to 32 px, into one safetensors shard
    cat photos.jsonl | dataset pack --format safetensors --size 32 --crop --out photos-shard
"""))
@common_options(uses={"skip_invalid", "workers"})
def pack(source: str = typer.Argument(None, help="Manifest, image folder, .safetensors shard, demo:NAME or -."),
         out: Path = typer.Option(..., "--out", help="Folder for the shards and pack.json (created)."),
         shard_format: str = typer.Option("webdataset", "--format", help="webdataset (tar) or safetensors."),
         split: str = typer.Option(None, "--split", help="Only this split (stored in each record)."),
         size: int = typer.Option(None, "--size", min=1, help="Resize the shorter side to S pixels (stored as PNG)."),
         crop: bool = typer.Option(False, "--crop", help="With --size: then crop the centre S×S."),
         shard_size: float = typer.Option(500.0, "--shard-size", min=0.001, help="About this many MB per shard."),
         shard_count: int = typer.Option(None, "--shard-count", min=1, help="At most this many images per shard."),
         force: bool = typer.Option(False, "--force", help="Write into a non-empty folder dataset did not make, "
                                                           "or repack a finished pack from the start."),
         *, common: Common) -> None:
    """Pack SOURCE into uint8 shards under --out; one JSON summary per shard on stdout.

    WebDataset tars keep each image file's own bytes (the same pixels) unless --size is given, then
    PNG; safetensors shards need images of one shape (--size S --crop). A rerun keeps the shards
    already finished and goes on from there.
    """
    text = input_source(source, "a manifest")
    from confidently.data import open_dataset
    from confidently.data.pack import pack as pack_dataset
    from confidently.data.webdataset import is_webdataset

    if is_webdataset(text):
        raise UsageError(f"{text} is tar shards already; pack reads manifests, image folders, .safetensors "
                         "shards and demo sets")
    writer = RecordWriter()
    invalid: list[InvalidInput] = []

    def skip(error: InvalidInput) -> None:
        invalid.append(error)
        writer.write(error_record(error.record_id, error))

    on_invalid = skip if common.skip_invalid else None
    dataset = open_dataset(text, split, on_invalid=on_invalid)
    summaries = pack_dataset(dataset, out, format=shard_format, size=size, crop=crop,
                             max_bytes=max(1, round(shard_size * 2**20)), max_count=shard_count, split=split,
                             workers=common.workers, force=force, on_invalid=on_invalid, on_shard=writer.write)
    skipped = f", skipped {len(invalid)} invalid records" if invalid else ""
    console.log(f"packed {sum(s['count'] for s in summaries)} images into {len(summaries)} shards in {out}{skipped}")


def _parse_fractions(text: str) -> dict[str, float]:
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--fractions {text!r}: expected NAME=FRACTION,..., e.g. train=0.8,val=0.2") from None
    if any(not name for name in fractions) or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise UsageError(f"--fractions {text!r}: names must be non-empty and fractions >= 0 with a positive sum")
    return fractions


def _parse_class_groups(specs: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for spec in specs:
        name, _, members = spec.partition(":")
        try:
            labels = []
            for piece in members.split(","):
                low, _, high = piece.partition("-")
                labels.extend(range(int(low), int(high or low) + 1))
        except ValueError:
            raise UsageError(f"--classes {spec!r}: expected NAME:LABELS, e.g. source:0-4 or target:5,7,9") from None
        groups[name] = labels
    return groups


@app.command(epilog=examples("""
    # stratified 80/20 train/val split of a manifest (records on stdout, one file per split in parts/)
    dataset split digits.jsonl --fractions train=0.8,val=0.2 --out parts > /dev/null
    # two relabelled 5-class tasks for transfer experiments: source = classes 0-4, target = 5-9
    dataset export "demo:shapes?classes=10&per_class=20" --out shapes10 > shapes10.jsonl
    dataset split shapes10.jsonl --by classes --classes source:0-4 --classes target:5-9 --relabel --out tasks
"""))
@common_options(uses={"seed"})
def split(source: str = typer.Argument(None, help="Manifest, image folder, .safetensors shard or -."),
          fractions: str = typer.Option("train=0.8,val=0.2", "--fractions", help="NAME=FRACTION,... to split into."),
          by: str = typer.Option("records", "--by", help="records (stratified by label) or classes (tasks)."),
          classes: list[str] = typer.Option(None, "--classes", help="With --by classes: NAME:LABELS, repeatable."),
          stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Split each label alike."),
          relabel: bool = typer.Option(False, "--relabel", help="With --by classes: renumber labels 0..k-1 per task."),
          out: Path = typer.Option(None, "--out", help="Also write OUT/<split>.jsonl for each split."),
          force: bool = typer.Option(False, "--force", help="Write into a non-empty --out dataset did not make."),
          *, common: Common) -> None:
    """Seeded split of a dataset's records (train/val) or classes (source/target tasks).

    Each record goes to stdout with its "split" set. The split depends only on ids, labels
    and --seed, not on input order.
    """
    from confidently.data import open_dataset, split_by_class, split_records

    text = input_source(source, "a manifest")
    if text.startswith("demo:"):
        raise UsageError(f"{text} has no files to point at; export it first: "
                         f"dataset export {text} --out DIR > manifest.jsonl")
    dataset = open_dataset(text, None)
    labels = dataset.labels.tolist()
    if by == "records":
        names = split_records(dataset.ids, labels, _parse_fractions(fractions), common.seed, stratify)
        new_labels = labels
    elif by == "classes":
        if dataset.num_classes == 0 or min(labels) < 0:
            raise InvalidInput(f"{dataset.name}: --by classes needs every record to have a label", field="label")
        groups = _parse_class_groups(classes) if classes else _parse_fractions(fractions)
        try:
            task_of = split_by_class(dataset.num_classes, groups, common.seed)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        names = [task_of.get(label, "") for label in labels]
        members = {task: sorted(label for label, t in task_of.items() if t == task) for task in set(task_of.values())}
        new_labels = [members[task].index(label) if relabel and task else label
                      for task, label in zip(names, labels, strict=True)]
    else:
        raise UsageError(f"--by {by!r}: choose records or classes")
    if out is not None:
        claim_folder(out, "dataset", force=force)
    writer = RecordWriter()
    per_split: dict[str, list[dict[str, Any]]] = {}
    for record, name, label in zip(dataset.records, names, new_labels, strict=True):
        if not name:
            continue  # a class left out of every explicit group
        data = rebase_refs(record.data, record.base_dir, Path.cwd())
        data["split"] = name
        if "label" in data and relabel:
            if dataset.classes:
                data["class_name"] = dataset.classes[data["label"]]
            data["label"] = label
        writer.write(data)
        per_split.setdefault(name, []).append(data)
    if out is not None:
        for name, rows in per_split.items():
            with atomic_write(out / f"{file_stem(name)}.jsonl", "w") as handle:
                handle.writelines(dumps_record(rebase_refs(row, Path.cwd(), out)) + "\n" for row in rows)
    console.log(", ".join(f"{name}: {len(rows)}" for name, rows in sorted(per_split.items())))


def main() -> None:
    run_app(app, "dataset")


if __name__ == "__main__":
    main()
