"""``immunize score``'s per-batch work: every record's edit pairs (the edit of the clean photo against the
edit of the immunized one; for a transform, the edit of the transformed clean photo against the edit of the
transformed immunized one, so a transform alone never counts as protection) scored together on the device,
with the features FID and precision/recall need kept for the summary but never written to stdout, and the
prompt–image CLIP similarity of both edits when a CLIP is given."""

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

    ``ref`` and ``test`` name the records' image fields; ``variants`` the transforms whose edits are scored too:
    field ``<test>_<transform>`` against its control ``<ref>_<transform>`` (both written by ``immunize edit
    --transform``; a record without the test edit is counted as missing it, one without the control is
    refused). ``features`` (None: no FID/PR) maps a list of images to feature rows; ``clip`` (None: no CLIP
    score) is a :class:`~confidently.immunize.clip.ClipSimilarity`; ``batch_size`` is halved on CUDA
    out-of-memory.
    """

    def __init__(self, summary: ScoreSummary, ref: str, test: str, variants: Sequence[Any], pair_names: list[str],
                 *, small_images: str, device: torch.device, batch_size: int,
                 features: Callable[[list[torch.Tensor]], torch.Tensor] | None = None, clip: Any = None):
        self.summary, self.ref, self.pair_names = summary, ref, pair_names
        self.small_images, self.device, self.batch_size, self.features = small_images, device, batch_size, features
        self.clip = clip
        self.loader = ImageLoader(3)
        self.fields = [(None, ref, test),
                       *((t.spec, transform_field(ref, t), transform_field(test, t)) for t in variants)]

    def image(self, record: Record, field: str) -> torch.Tensor:
        return self.loader.load_field(record, field, origin=" (from `immunize edit`)")

    def load(self, record: Record) -> tuple[list, list[str]]:
        """A record's (ref image, test image, variant) pairs and the transformed edits it lacks."""
        clean = self.image(record, self.ref)
        found, missing = [], []
        for variant, ref_name, name in self.fields:
            if variant is not None and record.data.get(name) is None:
                missing.append(variant)
                continue
            if variant is not None and record.data.get(ref_name) is None:
                raise record.error(f"has {name} but not its control {ref_name}, the edit of the clean photo after "
                                   f"the same {variant}: against the untransformed edit, the transform alone would "
                                   f"count as protection. Edit again with `immunize edit --transform {variant}` "
                                   "(it writes both)", ref_name)
            reference = clean if variant is None else self.image(record, ref_name)
            image = self.image(record, name)
            if image.shape != reference.shape:
                raise record.error(f"is {'×'.join(map(str, image.shape))} but {ref_name} is "
                                   f"{'×'.join(map(str, reference.shape))}; metrics compare images of one size",
                                   name)
            found.append((reference, image, variant))
        return found, missing

    def _clip(self, records: list[Record], pairs: list, owners: list) -> list[tuple[Any, Any] | None]:
        """(cos(ref edit, prompt), cos(test edit, prompt)) per pair; None for a record without a prompt."""
        if self.clip is None:
            return [None] * len(pairs)
        prompts = [records[i].data.get("prompt") for i, _ in owners]
        wanted = [k for k, prompt in enumerate(prompts) if isinstance(prompt, str) and prompt.strip()]
        images, index, rows = [], {}, []
        for k in wanted:
            pair_rows = []
            for image in pairs[k]:
                if id(image) not in index:  # a record's clean edit is shared by its pairs: embed it once
                    index[id(image)] = len(images)
                    images.append(image)
                pair_rows.append(index[id(image)])
            rows.append(pair_rows)
        row_prompts = [None] * len(images)
        for k, (ref_row, test_row) in zip(wanted, rows, strict=True):
            row_prompts[ref_row] = row_prompts[test_row] = prompts[k]
        values = []
        for start in range(0, len(images), self.batch_size):
            values += self.clip.similarity(images[start:start + self.batch_size],
                                           row_prompts[start:start + self.batch_size])
        out: list[tuple[Any, Any] | None] = [None] * len(pairs)
        for k, (ref_row, test_row) in zip(wanted, rows, strict=True):
            out[k] = (values[ref_row], values[test_row])
        return out

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
            refs: dict[int, int] = {}  # a record's clean edit, shared by its untransformed pairs: once
            for ref, _ in pairs:
                refs.setdefault(id(ref), len(refs))
            unique = {id(ref): ref for ref, _ in pairs}
            ref_rows = self._features([unique[key] for key in refs])
            ref_features = [ref_rows[refs[id(ref)]] for ref, _ in pairs]
            test_features = self._features([image for _, image in pairs])
        clip = self._clip(records, pairs, owners)
        results = []
        for i, (record, (_, missing)) in enumerate(zip(records, loaded, strict=True)):
            out = {**record.data, "kind": "immunize.scored", "tool_version": __version__}
            private = {"group": self.summary.group_of(record.data), "pairs": [], "missing": missing}
            for k, (index, variant) in enumerate(owners):
                if index != i:
                    continue
                values, notes = scores[k].values, scores[k].notes
                similarity = None if clip[k] is None else {"ref": clip[k][0], "test": clip[k][1]}
                if variant is None:
                    out["metrics"] = values
                    if self.clip is not None:
                        out["clip"] = similarity
                        if similarity is None:
                            notes = {**notes, "clip": "no prompt in the record"}
                    if notes:
                        out["metrics_notes"] = notes
                else:
                    out.setdefault("metrics_transformed", {})[variant] = values
                    if self.clip is not None:
                        out.setdefault("clip_transformed", {})[variant] = similarity
                private["pairs"].append((variant, values, notes, None if ref_features is None else ref_features[k],
                                         None if test_features is None else test_features[k], clip[k]))
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
        for variant, values, notes, ref_features, test_features, clip in private["pairs"]:
            self.summary.add(private["group"], variant, values, notes=notes, ref_features=ref_features,
                             test_features=test_features, clip=clip)
        for variant in private["missing"]:
            self.summary.add_missing(private["group"], variant)
