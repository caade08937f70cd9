"""Evaluators: turn a model's output on one render into the record's judgement.

``classification`` (3DB's defaults): ``is_correct`` when any of the top-k predictions is one of the
object's labels, ``loss`` = −log of the probability given to the labels (the cross-entropy for one
label), ``prediction`` = the top-k class indices, ``scores`` = their probabilities. A custom evaluator
is ``py:module:Class``: ``Class(**args)`` with ``evaluate(logits 1×K, labels) -> dict``.
"""

from __future__ import annotations

from typing import Any

import torch

from confidently.errors import UsageError
from confidently.registry import Registry

EVALUATORS: Registry[type] = Registry("evaluator")


@EVALUATORS.register("classification")
class ClassificationEvaluator:
    output_type = "classes"

    def __init__(self, topk: int = 1, **extra: Any):
        if extra:
            raise UsageError(f"evaluation classification: unknown argument(s) {', '.join(sorted(extra))}; "
                             "valid: topk")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise UsageError(f"evaluation classification: topk must be an integer >= 1, got {topk!r}")
        self.topk = topk

    def check(self, num_classes: int, labels: list[int]) -> None:
        if self.topk > num_classes:
            raise UsageError(f"evaluation: topk {self.topk} exceeds the model's {num_classes} classes")
        bad = [label for label in labels if label >= num_classes]
        if bad:
            raise UsageError(f"object label(s) {bad} but the model has {num_classes} classes (0..{num_classes - 1})")

    def evaluate(self, logits: torch.Tensor, labels: list[int]) -> dict[str, Any]:
        logits = logits.reshape(-1).double()
        log_probs = torch.log_softmax(logits, 0)
        scores, prediction = log_probs.exp().topk(self.topk)
        wanted = torch.tensor(labels, dtype=torch.long)
        loss = -float(torch.logsumexp(log_probs[wanted], 0))
        return {"is_correct": bool(set(prediction.tolist()) & set(labels)), "loss": loss,
                "prediction": [int(p) for p in prediction], "scores": [float(s) for s in scores],
                "output_type": self.output_type}


def make_evaluator(config: dict[str, Any]):
    module = str(config.get("module", "classification"))
    args = dict(config.get("args") or {})
    cls = EVALUATORS.resolve(module)
    try:
        return cls(**args)
    except TypeError as exc:
        raise UsageError(f"evaluation {module!r}: bad arguments ({exc})") from None
