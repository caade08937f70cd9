"""Planting a trigger in a manifest's records: the fields ``poison`` and ``stamp`` add to each record, and
the shard of stamped pixels ``poison --materialize`` writes.

By default a trigger is *deferred*: a row carries its spec and the data layer stamps it last, after
augmentation when training, so crops and flips never move it. A materialised trigger is pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from confidently import __version__
from confidently.backdoor.poison import SELECTION_SEED, PoisonPlan, fraction_of_rows, parse_classes, select_poison
from confidently.backdoor.trigger_spec import check_trigger_fits
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.data.triggers import make_stamp
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata
from confidently.io.images import ImageLoader
from confidently.io.records import Record
from confidently.io.shard_writer import ShardWriter


@dataclass(frozen=True)
class PoisonedManifest:
    """A poisoned manifest: the fields each record gains, one row per poisoned record (its id and labels), the
    counts, and the plan that chose the rows."""

    fields: list[dict[str, Any]]
    poisoned: list[dict[str, Any]]
    summary: dict[str, Any]
    plan: PoisonPlan


def poison_manifest(records: Sequence[Record], trigger: dict[str, Any], *, rate: float, mode: str = "group",
                    group_classes: str | None = None, rate_of: str | None = None, sampling: str = "exact",
                    target_label: int | None = None, exclude_target: bool = True, seed: int = SELECTION_SEED,
                    materialize: Path | None = None, img_size: int | None = None) -> PoisonedManifest:
    """Choose the rows to poison (:func:`select_poison`; ``group_classes`` as text, e.g. ``151-268``) and
    give each record its fields: the deferred trigger, new labels in relabel mode, the original id and label.

    With ``materialize`` the stamped pixels go into that shard instead (see :func:`write_materialized`) and
    rows point at them.
    """
    check_trigger_fits(records, trigger, img_size)
    labels = [record.data.get("label") for record in records]
    known = [label for label in labels if label is not None]
    if not known:
        raise InvalidInput("the manifest has no labels; poisoning chooses rows by class", field="label")
    num_classes = max(known) + 1
    group = parse_classes(group_classes, num_classes) if group_classes else None
    plan = select_poison([record.id for record in records], labels, rate=rate, mode=mode, group=group,
                         rate_of=rate_of, sampling=sampling, seed=seed, target_label=target_label,
                         exclude_target=exclude_target, num_classes=num_classes)
    chosen = set(plan.rows)
    shard_refs = write_materialized(materialize, records, chosen, trigger, plan.new_labels, img_size) \
        if materialize else None
    fields: list[dict[str, Any]] = []
    poisoned: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"poisoned": i in chosen, "trigger": trigger if i in chosen else None,
                               "orig_id": record.data.get("orig_id", record.id)}
        if shard_refs is not None:  # the pixels are stamped already: nothing is deferred
            row.update(image=shard_refs[i], trigger=None, materialized_trigger=trigger if i in chosen else None)
        if i in plan.new_labels:
            row.update(orig_label=record.data.get("label"), label=plan.new_labels[i])
            if "class_name" in record.data:  # the exported name is the original class's
                row.update(orig_class_name=record.data["class_name"], class_name=None)
        if i in chosen:
            poisoned.append({"tool": "plant-backdoor", "id": record.id, "poisoned": True,
                             "orig_label": record.data.get("label"),
                             "label": row.get("label", record.data.get("label"))})
        fields.append(row)
    summary = {"tool": "plant-backdoor", "version": __version__, "kind": "summary", "mode": mode, "n": len(records),
               "n_candidates": plan.candidates, "n_poisoned": len(plan.rows), "rate_requested": rate,
               "rate_of": rate_of or ("group" if mode == "group" else "dataset"),
               "rate_realised": plan.realised_rate, "sampling": sampling, "seed": seed, "trigger": trigger,
               "poisoned_ids_sha256": hashlib.sha256(
                   "\n".join(sorted(p["id"] for p in poisoned)).encode()).hexdigest()}
    return PoisonedManifest(fields, poisoned, summary, plan)


def stamp_manifest(records: Sequence[Record], trigger: dict[str, Any], *, rate: float = 1.0, uniform: bool = False,
                   seed: int = SELECTION_SEED) -> list[dict[str, Any]]:
    """The fields that stamp ``rate`` of the rows (of every class alike with ``uniform``: target de-biasing)
    with the deferred trigger and keep their labels; the rows are chosen by (seed, id)."""
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"`rate` {rate}: expected a fraction in [0, 1]")
    check_trigger_fits(records, trigger)
    classes = [record.data.get("label") if uniform else None for record in records]
    chosen = set(fraction_of_rows([record.id for record in records], classes, rate, seed, "stamp"))
    return [{"stamped": True, "trigger": trigger} if i in chosen else {"stamped": False} for i in range(len(records))]


def write_materialized(path: Path, records: Sequence[Record], chosen: Collection[int], trigger: dict[str, Any],
                       new_labels: Mapping[int, int], img_size: int | None = None) -> list[dict[str, Any]]:
    """Stamp the ``chosen`` rows' pixels and write every row as uint8, with its (new) label, into one shard,
    row by row (memory stays one image); returns each row's tensor reference.

    A shard holds one size: ``img_size`` resizes each photo's shorter side and crops the centre square first.
    Augmentation in training can then crop or flip the trigger away (deferred triggers cannot be moved).
    """
    fit = make_preprocess("eval", DataConfig((img_size, img_size))) if img_size else None
    loader = ImageLoader(None)
    shard = ShardWriter(path)
    first: tuple[int, ...] | None = None
    try:
        for i, record in enumerate(records):
            image = loader.load_field(record, "image")
            if fit is not None:
                image = fit(image)
            if first is None:
                first = tuple(image.shape)
            elif tuple(image.shape) != first:
                raise record.error(f"image is {list(image.shape)} but the first is {list(first)}; a shard holds one "
                                   "size (img_size S fits every photo to S×S)", "image")
            if i in chosen:
                image = make_stamp(trigger, first)(image[None])[0]
            label = new_labels.get(i, record.data.get("label", -1))
            shard.append(images=image.mul(255).round_().clamp_(0, 255).to(torch.uint8)[None],
                         labels=torch.tensor([label], dtype=torch.int64))
    except BaseException:
        shard.discard()
        raise
    shard.close(artifact_metadata(tool="plant-backdoor", kind="shard", ids=[r.id for r in records], trigger=trigger))
    return [{"tensors": str(path), "key": "images", "index": i} for i in range(len(records))]
