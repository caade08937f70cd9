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
from confidently.smoothing.ablation import Ablation, ablation_votes, certify_counts, default_ablation_size, vote_counts


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
    """Turns votes into certificate results: counts, smoothed class, gap, Δ and certificates per size."""

    def __init__(self, ablation: Ablation, height: int, width: int, num_classes: int, patch_sizes: list[int],
                 tie: str, exact: bool, rule: dict[str, Any], drop_tokens: bool, seed: int):
        self.ablation, self.height, self.width = ablation, height, width
        self.num_classes, self.patch_sizes, self.tie = num_classes, patch_sizes, tie
        self.rule, self.drop_tokens, self.seed = rule, drop_tokens, seed
        # Δ for every patch side, once: certificates at the requested sizes and the largest certified size.
        self.deltas = {m: ablation.delta(height, width, m, exact) for m in range(1, max(height, width) + 1)}

    def results(self, votes: torch.Tensor, base: torch.Tensor, labels: list[int | None]) -> list[dict[str, Any]]:
        counts = vote_counts(votes, self.num_classes)
        certified_at = {m: certify_counts(counts, delta, self.tie)[1] for m, delta in self.deltas.items()}
        pred = certify_counts(counts, 0, self.tie)[0]
        return [self._result(votes[row], counts[row], int(pred[row]), int(base[row]), labels[row],
                             {m: bool(c[row]) for m, c in certified_at.items()}) for row in range(len(counts))]

    def _result(self, votes: torch.Tensor, counts: torch.Tensor, pred: int, base: int, label: int | None,
                certified_at: dict[int, bool]) -> dict[str, Any]:
        ranked = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
        runner_up = ranked[1] if len(ranked) > 1 else None
        gap = int(counts[pred]) - (int(counts[runner_up]) if runner_up is not None else 0)
        certified = {str(m): certified_at[m] for m in self.patch_sizes}
        return {
            "version": __version__, "seed": self.seed, "pred": pred, "base_pred": base,
            "correct": None if label is None else pred == label,
            "ablation": {"type": self.ablation.kind, "size": self.ablation.size, "stride": self.ablation.stride,
                         "n": len(votes), "null": "zero", "drop_tokens": self.drop_tokens},
            "vote": {**self.rule, "total": int(counts.sum())},
            "counts_top": [[c, int(counts[c])] for c in ranked[:3]], "runner_up": runner_up, "gap": gap,
            "delta": {str(m): self.deltas[m] for m in self.patch_sizes}, "certified": certified,
            "certified_correct": {m: ok and label is not None and pred == label for m, ok in certified.items()},
            "max_certified_patch": max((m for m, ok in certified_at.items() if ok), default=0),  # Δ grows with m
            "ablation_acc": None if label is None else float(
                (votes[:, label] if votes.ndim == 2 else votes == label).float().mean()),
        }


class Certifier:
    """Certifies a batch of loaded records: votes over the ablations and hands back results.

    With ``which`` (a subset of the ablations, one shard of them) it only collects votes: certificates need
    them all. Votes are kept (``collected``) only with ``keep_votes`` (to save them, :func:`save_votes`):
    memory stays bounded by the batch, not the dataset. :meth:`load_record` fits a record's image (and
    mask) to the model, so it is what :func:`~confidently.cli.stream_batches` loads ahead.
    """

    def __init__(self, model: Classifier, certificates: Certificates, batch_size: int, theta: float | None,
                 which: list[int] | None = None, keep_votes: bool = False):
        self.model, self.certificates, self.batch_size, self.theta, self.which = model, certificates, batch_size, \
            theta, which
        self.keep_votes = keep_votes or which is not None
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

    def votes_and_base(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every ablation's vote and the unablated (base) prediction for a batch of images."""
        device = self.model.normalize.mean.device
        votes = ablation_votes(self.model, images.to(device), self.certificates.ablation,
                               drop_tokens=self.certificates.drop_tokens, batch_size=self.batch_size,
                               visible=visible.to(device), theta=self.theta, which=self.which)
        with torch.no_grad():
            base = self.model(images.to(device)).argmax(1).cpu()
        return votes.cpu(), base

    def __call__(self, records: list[Record], loaded: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, Any]]:
        """Results for a batch of records and their :meth:`load_record` (image, visible) pairs."""
        votes, base = self.votes_and_base(torch.stack([image for image, _ in loaded]),
                                          torch.stack([visible for _, visible in loaded]))
        if self.keep_votes:
            self.collected += [(record.id, record.data.get("label"), votes[row], int(base[row]))
                               for row, record in enumerate(records)]
        if self.which is not None:
            return [{**record.data, "certify": {"partial": True, "ablations": len(self.which)}} for record in records]
        labels = [record.data.get("label") for record in records]
        return [{**record.data, "certify": result}
                for record, result in zip(records, self.certificates.results(votes, base, labels), strict=True)]
