"""Clean and adversarial accuracy over a stream of batches, as counts that shards can sum, and the
per-batch PGD that every command attacking a dataset shares.

One pass over the data serves every attack: each batch is predicted clean once and attacked
once per radius, so a dataset of any size is read once and memory stays that of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from confidently.adversarial import PGDConfig, pgd_attack
from confidently.data.loader import Batch
from confidently.errors import InvalidInput
from confidently.run import record_generator, with_batch_backoff


def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def attack_rows(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str],
                attack: PGDConfig, seed: int, *, targeted: bool = False) -> torch.Tensor:
    """PGD examples of one batch (on its device). Each row's random starts come from (seed, id), so a
    row's result does not depend on its batch; the batch is split in halves on CUDA out-of-memory."""
    def run(size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(ids), size):
            rows = slice(start, start + size)
            generators = [record_generator(seed, record_id) for record_id in ids[rows]]
            out.append(pgd_attack(model, images[rows], labels[rows], attack, generator=generators, targeted=targeted))
        return torch.cat(out) if out else images[:0].clone()

    return with_batch_backoff(run, max(1, len(ids)))[0]


def robustness_tallies(model: nn.Module, batches: Iterable[Batch], attacks: Sequence[PGDConfig], *,
                       num_classes: int, seed: int = 0) -> list[dict[str, dict[str, list[int]]]]:
    """For each attack, per-class counts of correct predictions: ``{"nat": ..., "adv": ...}``
    (``adv`` only where the attack has eps > 0), as :func:`~confidently.training.class_tallies` gives.

    Labels must be in ``0..num_classes-1``. Results do not depend on how the data is batched.
    """
    model.eval()
    zeros = {"class_n": torch.zeros(num_classes, dtype=torch.long),
             "class_correct": torch.zeros(num_classes, dtype=torch.long)}
    totals = [{arm: {k: v.clone() for k, v in zeros.items()} for arm in (("nat", "adv") if a.eps > 0 else ("nat",))}
              for a in attacks]

    def add(counts: dict[str, torch.Tensor], predictions: torch.Tensor, labels: torch.Tensor) -> None:
        predictions, labels = predictions.cpu(), labels.cpu()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise InvalidInput(f"labels {int(labels.min())}..{int(labels.max())} are outside the model's "
                               f"{num_classes} classes", field="label")
        counts["class_n"] += torch.bincount(labels, minlength=num_classes)
        counts["class_correct"] += torch.bincount(labels[predictions == labels], minlength=num_classes)

    for batch in batches:
        clean = _predict(model, batch.images)
        for attack, tally in zip(attacks, totals, strict=True):
            add(tally["nat"], clean, batch.labels)
            if "adv" in tally:
                adversarial = attack_rows(model, batch.images, batch.labels, batch.ids, attack, seed)
                add(tally["adv"], _predict(model, adversarial), batch.labels)
    return [{arm: {k: v.tolist() for k, v in counts.items()} for arm, counts in tally.items()} for tally in totals]


def clean_accuracy(model: nn.Module, batches: Iterable[Batch], num_classes: int) -> float | None:
    """Top-1 accuracy over a stream (None for no rows)."""
    from confidently.training import accuracies

    return accuracies(robustness_tallies(model, batches, [PGDConfig(eps=0.0)], num_classes=num_classes)[0]["nat"])[0]


def paired_predictions(model: nn.Module, batches: Iterable[Batch], alter: Callable[[torch.Tensor], torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted classes of every image as it comes and after ``alter`` (e.g. a stamped trigger), with the
    labels, over a stream: only the predictions are kept."""
    model.eval()
    clean, altered, labels = [], [], []
    for batch in batches:
        clean.append(_predict(model, batch.images).cpu())
        altered.append(_predict(model, alter(batch.images)).cpu())
        labels.append(batch.labels.cpu())
    empty = torch.empty(0, dtype=torch.long)
    return tuple(torch.cat(parts) if parts else empty for parts in (clean, altered, labels))
