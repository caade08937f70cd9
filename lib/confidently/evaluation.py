"""Clean and adversarial accuracy over a stream of batches, as counts that shards can sum.

One pass over the data serves every attack: each batch is predicted clean once and attacked
once per radius and attack (:mod:`confidently.attacks`), so a dataset of any size is read once
and memory stays that of a batch. The per-batch PGD every command attacking a dataset shares,
:func:`attack_rows`, lives with the other attacks and is importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from confidently.adversarial import PGDConfig
from confidently.attacks import AttackSuite, attack_rows
from confidently.data.loader import Batch
from confidently.errors import InvalidInput

__all__ = ["attack_rows", "clean_accuracy", "paired_predictions", "robustness_tallies"]


def _predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).argmax(1)


def robustness_tallies(model: nn.Module, batches: Iterable[Batch], attacks: Sequence[PGDConfig | AttackSuite], *,
                       num_classes: int, seed: int = 0) -> list[dict[str, dict[str, list[int]]]]:
    """For each attack (a PGD config, or a suite of named attacks at one radius), per-class counts of
    correct predictions, as :func:`~confidently.training.class_tallies` gives: ``{"nat": ..., "adv": ...}``,
    ``adv`` only where eps > 0 and counting a point as correct only if no attack of the suite broke it;
    a suite of several attacks adds ``"adv:NAME"`` for each (at eps 0 too: there, the clean counts).

    Labels must be in ``0..num_classes-1``. PGD's results do not depend on how the data is batched; the
    torchattacks attacks' can (see :mod:`confidently.attacks`).
    """
    model.eval()
    suites = [a if isinstance(a, AttackSuite) else AttackSuite(("pgd",), a) for a in attacks]
    runners = [suite.build(num_classes) if suite.eps > 0 else [] for suite in suites]
    zeros = {"class_n": torch.zeros(num_classes, dtype=torch.long),
             "class_correct": torch.zeros(num_classes, dtype=torch.long)}

    def arms(suite: AttackSuite) -> list[str]:
        each = [f"adv:{name}" for name in suite.names] if len(suite.names) > 1 else []
        return ["nat", *(["adv"] if suite.eps > 0 else []), *each]

    totals = [{arm: {k: v.clone() for k, v in zeros.items()} for arm in arms(suite)} for suite in suites]

    def add(counts: dict[str, torch.Tensor], correct: torch.Tensor, labels: torch.Tensor) -> None:
        correct, labels = correct.cpu(), labels.cpu()
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise InvalidInput(f"labels {int(labels.min())}..{int(labels.max())} are outside the model's "
                               f"{num_classes} classes", field="label")
        counts["class_n"] += torch.bincount(labels, minlength=num_classes)
        counts["class_correct"] += torch.bincount(labels[correct], minlength=num_classes)

    for batch in batches:
        clean = _predict(model, batch.images) == batch.labels
        for suite, attackers, tally in zip(suites, runners, totals, strict=True):
            add(tally["nat"], clean, batch.labels)
            worst = clean if suite.eps == 0 else torch.ones_like(clean)
            for name, attacker in zip(suite.names, attackers or [None] * len(suite.names), strict=True):
                correct = clean if attacker is None else \
                    _predict(model, attacker(model, batch.images, batch.labels, batch.ids, seed)) == batch.labels
                worst = worst & correct
                if f"adv:{name}" in tally:
                    add(tally[f"adv:{name}"], correct, batch.labels)
            if "adv" in tally:
                add(tally["adv"], worst, batch.labels)
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
