"""``immunize score``'s per-batch work: every record's edit pairs (the edit of the clean photo against the
edit of the immunized one, and of its transformed copies) scored together on the device, with the features
FID and precision/recall need kept for the summary but never written to stdout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from confidently import __version__
from confidently.immunize.metrics import ScoreSummary, extract_features, score_image_pairs
from confidently.immunize.transforms import transform_field
from confidently.io.images import ImageLoader
from confidently.io.records import Record, RecordWriter
from confidently.run.device import with_batch_backoff


class EditScorer:
    """The batch function for :func:`~confidently.cli.stream_batches` (its :meth:`load` reads a record ahead).

    ``ref`` and ``test`` name the records' image fields; ``variants`` the transforms whose edits are scored too
    (field ``<test>_<transform>``; a record without one is counted as missing it). ``features`` (None: no
    FID/PR) maps a list of images to feature rows; ``batch_size`` is halved on CUDA out-of-memory.
    """

    def __init__(self, summary: ScoreSummary, ref: str, test: str, variants: Sequence[Any], pair_names: list[str],
                 *, small_images: str, device: torch.device, batch_size: int,
                 features: Callable[[list[torch.Tensor]], torch.Tensor] | None = None):
        self.summary, self.ref, self.pair_names = summary, ref, pair_names
        self.small_images, self.device, self.batch_size, self.features = small_images, device, batch_size, features
        self.loader = ImageLoader(3)
        self.fields = [(None, test), *((t.spec, transform_field(test, t)) for t in variants)]

    def image(self, record: Record, field: str) -> torch.Tensor:
        return self.loader.load_field(record, field, origin=" (from `immunize edit`)")

    def load(self, record: Record) -> tuple[list, list[str]]:
        """A record's (ref image, test image, variant) pairs and the transformed edits it lacks."""
        clean = self.image(record, self.ref)
        found, missing = [], []
        for variant, name in self.fields:
            if variant is not None and record.data.get(name) is None:
                missing.append(variant)
                continue
            image = self.image(record, name)
            if image.shape != clean.shape:
                raise record.error(f"is {'×'.join(map(str, image.shape))} but {self.ref} is "
                                   f"{'×'.join(map(str, clean.shape))}; metrics compare images of one size", name)
            found.append((clean, image, variant))
        return found, missing

    def _features(self, images: list[torch.Tensor]) -> torch.Tensor:
        rows, _ = with_batch_backoff(lambda size: extract_features(images, self.features, device=self.device,
                                                                   batch_size=size), self.batch_size)
        return rows

    def __call__(self, records: list[Record], loaded: list[tuple[list, list[str]]]) -> list[dict[str, Any]]:
        pairs, owners = [], []  # (ref image, test image), (record index, variant)
        for i, (found, _) in enumerate(loaded):
            for clean, image, variant in found:
                pairs.append((clean, image))
                owners.append((i, variant))
        scores, _ = with_batch_backoff(lambda size: score_image_pairs(pairs, self.pair_names, small=self.small_images,
                                                                      device=self.device, batch_size=size),
                                       self.batch_size)
        ref_features = test_features = None
        if self.features is not None and pairs:
            firsts = {index: k for k, (index, _) in reversed(list(enumerate(owners)))}
            ref_rows = self._features([pairs[k][0] for k in firsts.values()])
            ref_features = {index: ref_rows[j] for j, index in enumerate(firsts)}
            test_features = self._features([image for _, image in pairs])
        results = []
        for i, (record, (_, missing)) in enumerate(zip(records, loaded, strict=True)):
            out = {**record.data, "kind": "immunize.scored", "tool_version": __version__}
            private = {"group": self.summary.group_of(record.data), "pairs": [], "missing": missing}
            for k, (index, variant) in enumerate(owners):
                if index != i:
                    continue
                values, notes = scores[k].values, scores[k].notes
                if variant is None:
                    out["metrics"] = values
                    if notes:
                        out["metrics_notes"] = notes
                else:
                    out.setdefault("metrics_transformed", {})[variant] = values
                private["pairs"].append((variant, values, notes, None if ref_features is None else ref_features[i],
                                         None if test_features is None else test_features[k]))
            out["_score"] = private
            results.append(out)
        return results


class ScoreWriter(RecordWriter):
    """Writes per-record scores and feeds them (with the features that never reach stdout) to the summary."""

    def __init__(self, summary: ScoreSummary):
        super().__init__()
        self.summary = summary

    def write(self, record: dict) -> None:
        private = record.pop("_score", None)
        super().write(record)
        if private is None:
            return
        for variant, values, notes, ref_features, test_features in private["pairs"]:
            self.summary.add(private["group"], variant, values, notes=notes, ref_features=ref_features,
                             test_features=test_features)
        for variant in private["missing"]:
            self.summary.add_missing(private["group"], variant)
