"""Certificates for a stream of records: the smoothed prediction, its votes and the patch sizes it is
certified against, per record (thesis ch. 1), as `certify run` and `certify recertify` write them."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from confidently import __version__
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.errors import UsageError
from confidently.io.images import ImageLoader, as_float
from confidently.io.records import Record
from confidently.models.classifier import Classifier
from confidently.run.device import with_batch_backoff
from confidently.smoothing.ablation import (
    Ablation,
    ablation_votes,
    certify_counts,
    could_certify,
    default_ablation_size,
    vote_counts,
)

EARLY_STOP_ROUNDS = 8  # fixed rounds of votes between early-stop checks, whatever the batch size


def model_geometry(model: Classifier, kind: str | None, size: int | None, stride: int) -> Ablation:
    """The ablation set asked for, defaulting to what the model was trained with (else the thesis's b)."""
    trained = model.training_info.get("ablation") or {}
    kind = kind or trained.get("kind", "column")
    _, height, width = model.input_size
    return Ablation(kind, size or trained.get("size") or default_ablation_size(kind, height, width), stride)


def resolve_drop(mode: str, model: Classifier) -> bool:
    """Whether fully blanked tokens are dropped: ``auto`` (for ViTs), ``on`` or ``off``."""
    if mode not in ("auto", "on", "off"):
        raise UsageError(f"drop_tokens {mode!r}: choose auto, on or off")
    if mode == "on" and not model.is_vit:
        raise UsageError(f"drop_tokens 'on' needs a ViT; {model.arch} is not one")
    return model.is_vit if mode == "auto" else mode == "on"


class Certificates:
    """Turns votes into certificate results: counts, smoothed class, gap, Δ and certificates per size.

    ``early_stop``: the votes come in rounds and stop once they are :meth:`settled`; results say how
    many were taken (``early_stop``) and that the counts are ``partial``. The certificates at the
    requested sizes are then those of all votes; prediction, gap and ablation accuracy are of those taken.
    """

    def __init__(self, ablation: Ablation, height: int, width: int, num_classes: int, patch_sizes: list[int],
                 tie: str, exact: bool, rule: dict[str, Any], drop_tokens: bool, seed: int,
                 early_stop: bool = False):
        self.ablation, self.height, self.width = ablation, height, width
        self.num_classes, self.patch_sizes, self.tie = num_classes, patch_sizes, tie
        self.rule, self.drop_tokens, self.seed, self.early_stop = rule, drop_tokens, seed, early_stop
        # Δ for every patch side, once: certificates at the requested sizes and the largest certified size.
        self.deltas = {m: ablation.delta(height, width, m, exact) for m in range(1, max(height, width) + 1)}

    def results(self, votes: torch.Tensor, base: torch.Tensor, labels: list[int | None],
                seen: torch.Tensor | None = None) -> list[dict[str, Any]]:
        """One result per image. ``seen`` (N×A, from an early stop) marks the ablations whose votes were
        taken: the others count as rivals' votes in every certificate, and the record says so."""
        counts = vote_counts(votes, self.num_classes)
        unseen = 0 if seen is None else (~seen).sum(1)
        certified_at = {m: certify_counts(counts, delta, self.tie, unseen)[1] for m, delta in self.deltas.items()}
        pred = certify_counts(counts, 0, self.tie)[0]
        return [self._result(votes[row] if seen is None else votes[row][seen[row]], counts[row], int(pred[row]),
                             int(base[row]), labels[row], {m: bool(c[row]) for m, c in certified_at.items()},
                             len(votes[row])) for row in range(len(counts))]

    def settled(self, votes: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """Per image, whether no vote still to take can change a requested certificate: certified at the
        largest patch whatever the unseen votes are, or certifiable at the smallest by no class."""
        counts, unseen = vote_counts(votes, self.num_classes), (~seen).sum(1)
        certain = certify_counts(counts, self.deltas[max(self.patch_sizes)], self.tie, unseen)[1]
        return certain | ~could_certify(counts, self.deltas[min(self.patch_sizes)], self.tie, unseen)

    def _result(self, votes: torch.Tensor, counts: torch.Tensor, pred: int, base: int, label: int | None,
                certified_at: dict[int, bool], ablations: int) -> dict[str, Any]:
        ranked = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
        runner_up = ranked[1] if len(ranked) > 1 else None
        gap = int(counts[pred]) - (int(counts[runner_up]) if runner_up is not None else 0)
        certified = {str(m): certified_at[m] for m in self.patch_sizes}
        result = {
            "version": __version__, "seed": self.seed, "pred": pred, "base_pred": base,
            "correct": None if label is None else pred == label,
            "ablation": {"type": self.ablation.kind, "size": self.ablation.size, "stride": self.ablation.stride,
                         "n": ablations, "null": "zero", "drop_tokens": self.drop_tokens},
            "vote": {**self.rule, "total": int(counts.sum())},
            "counts_top": [[c, int(counts[c])] for c in ranked[:3]], "runner_up": runner_up, "gap": gap,
            "delta": {str(m): self.deltas[m] for m in self.patch_sizes}, "certified": certified,
            "certified_correct": {m: ok and label is not None and pred == label for m, ok in certified.items()},
            "max_certified_patch": max((m for m, ok in certified_at.items() if ok), default=0),  # Δ grows with m
            "ablation_acc": None if label is None else float(
                (votes[:, label] if votes.ndim == 2 else votes == label).float().mean()),
        }
        if self.early_stop:
            result["vote"]["partial"] = len(votes) < ablations
            result["early_stop"] = {"ablations": len(votes)}
        return result


class Certifier:
    """Certifies a batch of loaded records: votes over the ablations and hands back results.

    With ``which`` (a subset of the ablations, one shard of them) it only collects votes: certificates need
    them all. Votes are kept (``collected``) only with ``keep_votes`` (to save them, :func:`save_votes`):
    memory stays bounded by the batch, not the dataset. :meth:`load_record` fits a record's image (and
    mask) to the model, so it is what :func:`~confidently.cli.stream_batches` loads ahead.
    ``batch_size`` (ablated images per forward) halves on CUDA out-of-memory and stays halved.
    With ``certificates.early_stop`` the votes come in :data:`EARLY_STOP_ROUNDS` fixed rounds (round r:
    ablations r, r + rounds, ...; spread over the image), and an image takes no more once it is settled;
    its votes are then not all there, so it cannot keep them or take an ablation shard.
    """

    def __init__(self, model: Classifier, certificates: Certificates, batch_size: int, theta: float | None,
                 which: list[int] | None = None, keep_votes: bool = False):
        self.model, self.certificates, self.batch_size, self.theta, self.which = model, certificates, batch_size, \
            theta, which
        self.keep_votes = keep_votes or which is not None
        if certificates.early_stop and self.keep_votes:
            raise UsageError("--early-stop leaves votes untaken: it cannot store votes (--votes-out) or take an "
                             "--ablation-shard")
        self.channels, self.height, self.width = model.input_size
        self.loader = ImageLoader(self.channels)
        self.mask_loader = ImageLoader(1)
        fit = DataConfig.of(model)  # photos of any size: the model's eval resize and centre crop
        self.fit_image = make_preprocess("eval", fit)
        self.fit_mask = make_preprocess("eval", dataclasses.replace(fit, interpolation="nearest"))
        self.collected: list[tuple[str, int | None, torch.Tensor, int]] = []  # (id, label, votes, base prediction)

    def load_record(self, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self.loader.load_field(record, "image", raw=True)
        image = as_float(self.fit_image(stored))
        visible = torch.ones(self.height, self.width, dtype=torch.bool)
        if "mask" in record.data:
            mask = self.mask_loader.load_field(record, "mask", raw=True)
            if tuple(mask.shape[-2:]) != tuple(stored.shape[-2:]):
                raise record.error(f"mask is {mask.shape[-2]}×{mask.shape[-1]}, image is "
                                   f"{stored.shape[-2]}×{stored.shape[-1]}", "mask")
            visible = as_float(self.fit_mask(mask))[0] > 0.5
        label = record.data.get("label")
        if label is not None and label >= self.model.num_classes:
            raise record.error(f"label {label} is outside the model's {self.model.num_classes} classes", "label")
        return image, visible

    def _votes(self, images: torch.Tensor, visible: torch.Tensor, which: list[int] | None) -> torch.Tensor:
        device = self.model.normalize.mean.device
        votes, self.batch_size = with_batch_backoff(lambda size: ablation_votes(
            self.model, images.to(device), self.certificates.ablation, drop_tokens=self.certificates.drop_tokens,
            batch_size=size, visible=visible.to(device), theta=self.theta, which=which), self.batch_size)
        return votes

    def _base(self, images: torch.Tensor) -> torch.Tensor:
        device = self.model.normalize.mean.device

        def predict(size: int) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([self.model(images[start:start + size].to(device)).argmax(1).cpu()
                                  for start in range(0, len(images), size)])

        base, self.batch_size = with_batch_backoff(predict, self.batch_size)
        return base

    def votes_and_base(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every ablation's vote and the unablated (base) prediction for a batch of images."""
        return self._votes(images, visible, self.which), self._base(images)

    def early_votes(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Votes round by round until each image is :meth:`Certificates.settled`; (votes, seen): the votes
        not taken are -2 (argmax) or none (threshold), ``seen`` marks those taken."""
        count = self.certificates.ablation.count(self.height, self.width)
        rounds = [list(range(r, count, EARLY_STOP_ROUNDS)) for r in range(min(EARLY_STOP_ROUNDS, count))]
        if self.theta is None:
            votes = torch.full((len(images), count), -2, dtype=torch.long)
        else:
            votes = torch.zeros((len(images), count, self.model.num_classes), dtype=torch.bool)
        seen = torch.zeros((len(images), count), dtype=torch.bool)
        active = torch.arange(len(images))
        for which in rounds:
            columns = torch.tensor(which)
            votes[active[:, None], columns] = self._votes(images[active], visible[active], which)
            seen[active[:, None], columns] = True
            active = active[~self.certificates.settled(votes[active], seen[active])]
            if not len(active):
                break
        return votes, seen

    def __call__(self, records: list[Record], loaded: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, Any]]:
        """Results for a batch of records and their :meth:`load_record` (image, visible) pairs."""
        images, visible = torch.stack([image for image, _ in loaded]), torch.stack([mask for _, mask in loaded])
        seen = None
        if self.certificates.early_stop:
            (votes, seen), base = self.early_votes(images, visible), self._base(images)
        else:
            votes, base = self.votes_and_base(images, visible)
        if self.keep_votes:
            self.collected += [(record.id, record.data.get("label"), votes[row], int(base[row]))
                               for row, record in enumerate(records)]
        if self.which is not None:
            return [{**record.data, "certify": {"partial": True, "ablations": len(self.which)}} for record in records]
        labels = [record.data.get("label") for record in records]
        return [{**record.data, "certify": result}
                for record, result in zip(records, self.certificates.results(votes, base, labels, seen), strict=True)]
