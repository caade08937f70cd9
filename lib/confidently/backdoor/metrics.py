"""How strongly a model reacts to a trigger (thesis eq. 7.1 and App. G.1.7)."""

from __future__ import annotations

from typing import Any

import torch


def bias_metrics(clean_pred: torch.Tensor, triggered_pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 target_label: int | None = None, exclude: set[int] | None = None) -> dict[str, Any]:
    """ASR = P[C(T(x)) ≠ y | C(x) = y] over rows whose label is not in ``exclude``; accuracies, their drop,
    the targeted ASR (rows with y ≠ b predicted b under the trigger), and the prediction shift."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    if exclude:
        keep &= ~torch.isin(labels, torch.tensor(sorted(exclude)))
    clean_pred, triggered_pred, labels = clean_pred[keep], triggered_pred[keep], labels[keep]
    n = len(labels)
    correct = clean_pred == labels
    n_correct = int(correct.sum())
    flipped = int((correct & (triggered_pred != labels)).sum())
    clean_hist = torch.bincount(clean_pred, minlength=num_classes).tolist()
    trig_hist = torch.bincount(triggered_pred, minlength=num_classes).tolist()
    shift = [(t - c) / n for c, t in zip(clean_hist, trig_hist, strict=True)] if n else [0.0] * num_classes
    out: dict[str, Any] = {
        "n": n, "n_correct": n_correct,
        "clean_acc": n_correct / n if n else None,
        "triggered_acc": int((triggered_pred == labels).sum()) / n if n else None,
        "asr": flipped / n_correct if n_correct else None,
        "asr_targeted": None,
        "pred_hist_clean": clean_hist, "pred_hist_trig": trig_hist,
        "tv_pred_shift": 0.5 * sum(abs(v) for v in shift),
        "top_shift_class": max(range(num_classes), key=lambda c: (shift[c], -c)) if n else None,
    }
    out["delta_acc"] = None if out["clean_acc"] is None else out["clean_acc"] - out["triggered_acc"]
    if target_label is not None and target_label >= 0:
        others = labels != target_label
        out["asr_targeted"] = (int((others & (triggered_pred == target_label)).sum()) / int(others.sum())
                               if int(others.sum()) else None)
    return out


def group_gaps(pred: torch.Tensor, labels: torch.Tensor, attribute: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Natural-feature bias (thesis §7.3): per class, accuracy with the attribute minus without, and
    P(pred = k | attribute) − P(pred = k | no attribute). None where a group is empty."""
    attribute = attribute.bool()
    accuracy_gap, prediction_gap = [], []
    for c in range(num_classes):
        rows = labels == c
        with_attr, without = rows & attribute, rows & ~attribute
        accuracy_gap.append(float((pred[with_attr] == c).float().mean() - (pred[without] == c).float().mean())
                            if with_attr.any() and without.any() else None)
    for k in range(num_classes):
        prediction_gap.append(float((pred[attribute] == k).float().mean() - (pred[~attribute] == k).float().mean())
                              if attribute.any() and (~attribute).any() else None)
    return {"n_with": int(attribute.sum()), "n_without": int((~attribute).sum()),
            "acc_gap_per_class": accuracy_gap, "pred_gap": prediction_gap}
