"""The per-batch work of the ablate record commands: each job turns a batch of records and their loaded
``(image, features)`` into output records, under the record's ``ablate`` key.

Jobs keep no state between batches, so an engine may run them anywhere (Ray workers included). What goes
into a command's tensor file (orders, explanations, masked images) travels with each record under
:data:`~confidently.io.records.ROWS` and is taken off by the job's ``keep`` as the
:class:`~confidently.io.records.Collector` writes it; ``artifact`` stacks what was kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from confidently import __version__
from confidently.errors import InvalidInput, UsageError
from confidently.io.records import ROWS, Record
from confidently.missingness.consistency import pairwise_jaccard
from confidently.missingness.curve import curve_ks, missingness_curves
from confidently.missingness.features import Features, removal_flags, visible_after_removal
from confidently.missingness.fills import Fill
from confidently.missingness.inputs import Inputs, Orders, RowsById, fill_seeds, padded
from confidently.missingness.lime import LimeConfig, explain
from confidently.missingness.model import MissingnessModel
from confidently.missingness.orders import removal_order
from confidently.run.seeding import derive_seed, record_generator

Loaded = list[tuple[torch.Tensor, Features]]


def ablate_result(schema: str, seed: int, **fields: Any) -> dict[str, Any]:
    """A record's ``ablate`` result: its schema, the toolbox version and the run seed first."""
    return {"schema": schema, "version": __version__, "seed": seed, **fields}


def _stacked(loaded: Loaded) -> tuple[torch.Tensor, list[Features]]:
    return torch.stack([image for image, _ in loaded]), [features for _, features in loaded]


def lime_batch_size(samples: int, height: int, width: int, batch_size: int) -> int:
    """Images per LIME batch so that their T visibility masks stay under ~64 MB."""
    return max(1, min(batch_size, (1 << 26) // max(1, samples * height * width)))


def explain_batch(mmodel: MissingnessModel, backend: str, config: LimeConfig, seed: int, records: list[Record],
                  images: torch.Tensor, features: list[Features]):
    """LIME explanations of a batch; perturbations and random fills seeded per record."""
    generators = [record_generator(seed, r.id, "lime") for r in records]
    seeds = fill_seeds(seed, records, "lime-fill", range(config.samples)) if mmodel.fill.random else None
    return explain(backend, mmodel, images, features, config, generators, seeds)


@dataclass
class OrderJob:
    """Removal orders (``ablate order``): each record's order, and its saliency scores when a reference
    model ranks the features."""

    orders: Orders
    inputs: Inputs
    seed: int

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any]]:
        images, features = _stacked(loaded)
        rows, scores = self.orders.compute(records, images, features)
        return [{**r.data, "ablate": ablate_result("ablate-order/v1", self.seed, order=self.orders.name,
                                                   features=f.count, **self.inputs.describe(), first=row[:10].tolist()),
                 ROWS: (row, score)}
                for r, f, row, score in zip(records, features, rows, scores, strict=True)]

    @staticmethod
    def keep(record: dict[str, Any]) -> tuple[str, torch.Tensor, torch.Tensor | None] | None:
        rows = record.pop(ROWS, None)
        return None if rows is None else (record["id"], *rows)

    def artifact(self, kept: Sequence[tuple[str, torch.Tensor, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
        tensors = {"orders": padded([row for _, row, _ in kept], -1, torch.int32),
                   "counts": torch.tensor([len(row) for _, row, _ in kept], dtype=torch.int32)}
        if self.orders.ref is not None:
            tensors["scores"] = padded([score for _, _, score in kept], float("nan"), torch.float32)
        return tensors


@dataclass
class CurveJob:
    """Missingness-bias curves (``ablate curve``): predictions as the first k features of each order are
    removed; records with the same k grid are run together."""

    mmodel: MissingnessModel
    orders: Orders
    inputs: Inputs
    seed: int
    step: int
    kmax: int | None
    model_name: str
    fill: str
    partial: str

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any]]:
        images, features = _stacked(loaded)
        rows, _ = self.orders.compute(records, images, features)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(tuple(curve_ks(f.count, self.step, self.kmax)), []).append(i)
        fill = self.mmodel.fill
        results: dict[int, dict[str, Any]] = {}
        for ks, members in groups.items():
            seeds = fill_seeds(self.seed, [records[i] for i in members], "fill", ks) if fill.random else None
            curves = missingness_curves(self.mmodel, images[members], [features[i] for i in members],
                                        [rows[i] for i in members], list(ks), seeds=seeds)
            first_flips = curves.first_flip()
            for row, i in enumerate(members):
                results[i] = ablate_result(
                    "ablate-curve/v1", self.seed, model=self.model_name, fill=self.fill,
                    true_removal=fill.true_removal, partial=self.partial if fill.drops_tokens else None,
                    order=self.orders.name, **self.inputs.describe(), features=features[i].count, ks=list(ks),
                    num_classes=self.mmodel.model.num_classes, pred0=int(curves.pred0[row]),
                    pred=curves.pred[row].tolist(), p_orig=[round(float(p), 6) for p in curves.p_orig[row]],
                    first_flip_k=first_flips[row])
        return [{**record.data, "ablate": results[i]} for i, record in enumerate(records)]


@dataclass
class LimeJob:
    """LIME explanations (``ablate lime``) under the model's missingness; full scores and rankings ride
    along for the explanations file."""

    mmodel: MissingnessModel
    backend: str
    config: LimeConfig
    inputs: Inputs
    seed: int
    model_name: str
    fill: str

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any]]:
        images, features = _stacked(loaded)
        explanations = explain_batch(self.mmodel, self.backend, self.config, self.seed, records, images, features)
        out = []
        for record, explanation, f in zip(records, explanations, features, strict=True):
            ranking = explanation.ranking
            out.append({**record.data, "ablate": ablate_result(
                "ablate-lime/v1", self.seed, model=self.model_name, fill=self.fill, backend=self.backend,
                **self.config.as_dict(), **self.inputs.describe(), features=f.count, pred0=explanation.pred0,
                ranking_top=ranking[:20].tolist(), score_top=[round(float(explanation.scores[j]), 6)
                                                              for j in ranking[:20]],
                intercept=round(explanation.intercept, 6), r2=round(explanation.r2, 6)), ROWS: explanation})
        return out

    @staticmethod
    def keep(record: dict[str, Any]) -> tuple[str, Any] | None:
        explanation = record.pop(ROWS, None)
        return None if explanation is None else (record["id"], explanation)

    @staticmethod
    def artifact(kept: Sequence[tuple[str, Any]]) -> dict[str, torch.Tensor]:
        return {"scores": padded([e.scores for _, e in kept], float("nan"), torch.float32),
                "ranking": padded([e.ranking for _, e in kept], -1, torch.int32),
                "counts": torch.tensor([len(e.scores) for _, e in kept], dtype=torch.int32),
                "intercept": torch.tensor([e.intercept for _, e in kept], dtype=torch.float32),
                "pred0": torch.tensor([e.pred0 for _, e in kept], dtype=torch.int64)}


def consistency_ks(ks: Sequence[int] | None, count: int) -> list[int]:
    """The k values of a record with ``count`` features (all of 1..count when none are given)."""
    if not ks:
        return list(range(1, count + 1))
    if ks[0] < 1 or ks[-1] > count:
        raise UsageError(f"k values {','.join(map(str, ks))}: they must lie in 1..{count} (the number of features)")
    return list(ks)


@dataclass
class ConsistencyJob:
    """Do LIME's rankings agree across fills (``ablate consistency``)? Every fill sees the same
    perturbations (seeded by record id), so only the fill differs; Jaccard of top-k sets per pair."""

    models: list[MissingnessModel]
    config: LimeConfig
    inputs: Inputs
    seed: int
    ks: list[int] | None
    model_name: str

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any]]:
        images, features = _stacked(loaded)
        per_fill = [explain_batch(m, "own", self.config, self.seed, records, images, features) for m in self.models]
        fills = [m.fill.name for m in self.models]
        out = []
        for i, (record, f) in enumerate(zip(records, features, strict=True)):
            ks = consistency_ks(self.ks, f.count)
            jaccard = pairwise_jaccard([explanations[i].ranking for explanations in per_fill], ks).tolist()
            out.append({**record.data, "ablate": ablate_result(
                "ablate-consistency/v1", self.seed, model=self.model_name, fills=fills, **self.config.as_dict(),
                **self.inputs.describe(), features=f.count, ks=ks, pairs=len(jaccard), jaccard=jaccard,
                jaccard_mean=torch.tensor(jaccard).mean(0).tolist())})
        return out


def ranking_sources(explanations: Sequence[str]) -> list[tuple[str, RowsById | None]]:
    """The rankings a top-k test compares: explanation files by name (repeated stems get a prime) or
    ``random`` (None: a random ranking per record)."""
    sources: list[tuple[str, RowsById | None]] = []
    for part in explanations:
        if part == "random":
            sources.append(("random", None))
            continue
        path = Path(part)
        name = path.stem
        while name in {n for n, _ in sources}:
            name += "'"
        sources.append((name, RowsById(path, "ranking", "explanation", "explanations from `ablate lime --out`")))
    if not sources:
        raise UsageError("explanations: give at least one file or random")
    return sources


@dataclass
class TopkJob:
    """The top-k faithfulness test (``ablate topk``): remove (or keep only) each ranking's top k features
    and count unchanged predictions; every source is tested on the same k grid and fills."""

    mmodel: MissingnessModel
    sources: list[tuple[str, RowsById | None]]
    inputs: Inputs
    seed: int
    kmax: int
    step: int
    keep_top: bool
    model_name: str
    fill: str
    strict_kmax: bool = False  # refuse a kmax beyond an image's feature count instead of clamping it

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any]]:
        images, features = _stacked(loaded)
        fewest = min(f.count for f in features)
        if self.kmax > fewest and self.strict_kmax:
            raise UsageError(f"kmax {self.kmax}: an image has only {fewest} features to remove")
        ks = curve_ks(fewest, self.step, min(self.kmax, fewest))
        seeds = fill_seeds(self.seed, records, "topk-fill", ks) if self.mmodel.fill.random else None
        per_source = []
        for name, rows in self.sources:
            rankings = [rows.get(r, f.count) if rows else
                        removal_order("random", f.count, None, record_generator(self.seed, r.id, "random-rank"))
                        for r, f in zip(records, features, strict=True)]
            curves = missingness_curves(self.mmodel, images, features, rankings, ks, self.keep_top, seeds)
            per_source.append((name, curves.pred0, curves.unchanged().int().tolist()))
        return [{**record.data, "ablate": ablate_result(
            "ablate-topk/v1", self.seed, model=self.model_name, fill=self.fill, keep_top=self.keep_top,
            **self.inputs.describe(), features=features[i].count, ks=ks, pred0=int(per_source[0][1][i]),
            unchanged={name: unchanged[i] for name, _, unchanged in per_source})}
            for i, record in enumerate(records)]


@dataclass
class ApplyJob:
    """Ablated images and masks (``ablate apply``) as records that point into one tensor file ``out``.

    One file holds one image size: the first image's. Which row of ``out`` a record points to is set as
    the collector keeps it (:meth:`keep`), in output order, so it is right whatever ran the batches.
    """

    orders: Orders
    filler: Fill
    inputs: Inputs
    seed: int
    out: Path
    fill: str
    remove: int | None = None
    remove_frac: float | None = None
    kept: int = field(default=0, init=False)
    size: tuple[int, ...] | None = field(default=None, init=False)

    def count(self, features: Features) -> int:
        return self.remove if self.remove is not None else round(self.remove_frac * features.count)

    def __call__(self, records: list[Record], loaded: Loaded) -> list[dict[str, Any] | InvalidInput]:
        results: list[dict[str, Any] | InvalidInput | None] = [
            record.error(f"removing {self.count(f)} features: this image has only {f.count}", "image")
            if self.count(f) > f.count else None for record, (_, f) in zip(records, loaded, strict=True)]
        by_size: dict[tuple[int, ...], list[int]] = {}  # images of one size go through together
        for i, problem in enumerate(results):
            if problem is None:
                by_size.setdefault(tuple(loaded[i][0].shape), []).append(i)
        for members in by_size.values():
            self._ablate(records, loaded, members, results)
        return results

    def _ablate(self, records: list[Record], loaded: Loaded, members: list[int],
                results: list[dict[str, Any] | InvalidInput | None]) -> None:
        images, features = _stacked([loaded[i] for i in members])
        rows, _ = self.orders.compute([records[i] for i in members], images, features)
        for row_index, (i, f, row) in enumerate(zip(members, features, rows, strict=True)):
            record, k = records[i], self.count(f)
            visible = visible_after_removal(f.labels, removal_flags(row, [k], f.count))
            data = {**record.data, "mask": {"tensors": str(self.out), "key": "masks", "index": None}}
            image = None
            if not self.filler.drops_tokens:
                seeds = [derive_seed(self.seed, record.id, "apply-fill")] if self.filler.random else None
                image = self.filler(images[row_index:row_index + 1], visible, seeds)[0]
                data["image"] = {"tensors": str(self.out), "key": "images", "index": None}
            data["ablate"] = ablate_result("ablate-apply/v1", self.seed, fill=self.fill,
                                           true_removal=self.filler.true_removal, order=self.orders.name,
                                           **self.inputs.describe(), features=f.count, k=k,
                                           removed=sorted(row[:k].tolist()))
            data[ROWS] = (visible[0].to(torch.uint8) * 255, image)
            results[i] = data

    def keep(self, record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Take a record's mask and image off it and point its references at their row; a record whose
        image size differs from the first kept one becomes an error in its place."""
        rows = record.pop(ROWS, None)
        if rows is None:
            return None
        mask = rows[0]
        if self.size is not None and tuple(mask.shape) != self.size:
            raise InvalidInput(f"image is {list(mask.shape)} but earlier ones are {list(self.size)}; one output "
                               "file holds one image size (resize upstream)", field="image", record_id=record["id"])
        self.size = tuple(mask.shape)
        for name in ("mask", "image"):
            if isinstance(record.get(name), dict) and record[name].get("tensors") == str(self.out):
                record[name]["index"] = self.kept
        self.kept += 1
        return rows

    @staticmethod
    def artifact(kept: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
        """Masks (255 = visible) and, unless the fill drops tokens, the filled images."""
        tensors = {"masks": torch.stack([mask for mask, _ in kept]) if kept else
                   torch.zeros(0, 0, 0, dtype=torch.uint8)}
        images = [image for _, image in kept if image is not None]
        if images:
            tensors["images"] = torch.stack(images).float()
        return tensors
