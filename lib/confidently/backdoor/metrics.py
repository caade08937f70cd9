"""How strongly a model reacts to a trigger (thesis eq. 7.1 and App. G.1.7).

Every metric is computed from integer tallies (``*_tallies``), so ``asr --shard i/N`` runs report counts
that add up to the unsharded run's, and the merge recomputes the same floats (``*_from_tallies``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.run.tallies import merge_shards

# The fields of an asr record that its tallies determine (everything else names what was measured).
ASR_COMPUTED = ("n", "n_correct", "clean_acc", "triggered_acc", "asr", "asr_targeted", "pred_hist_clean",
                "pred_hist_trig", "tv_pred_shift", "top_shift_class", "delta_acc", "group")


def bias_tallies(clean_pred: torch.Tensor, triggered_pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 target_label: int | None = None, exclude: set[int] | None = None) -> dict[str, Any]:
    """The counts behind :func:`bias_metrics`, over rows whose label is not in ``exclude``."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    if exclude:
        keep &= ~torch.isin(labels, torch.tensor(sorted(exclude)))
    clean_pred, triggered_pred, labels = clean_pred[keep], triggered_pred[keep], labels[keep]
    correct = clean_pred == labels
    tallies: dict[str, Any] = {
        "n": len(labels), "n_correct": int(correct.sum()),
        "n_flipped": int((correct & (triggered_pred != labels)).sum()),
        "n_triggered_correct": int((triggered_pred == labels).sum()),
        "pred_hist_clean": torch.bincount(clean_pred, minlength=num_classes).tolist(),
        "pred_hist_trig": torch.bincount(triggered_pred, minlength=num_classes).tolist(),
        "n_not_target": None, "n_to_target": None,
    }
    if target_label is not None and target_label >= 0:
        others = labels != target_label
        tallies.update(n_not_target=int(others.sum()),
                       n_to_target=int((others & (triggered_pred == target_label)).sum()))
    return tallies


def bias_from_tallies(tallies: dict[str, Any]) -> dict[str, Any]:
    """ASR = P[C(T(x)) ≠ y | C(x) = y]; accuracies, their drop, the targeted ASR (rows with y ≠ b predicted b
    under the trigger), and the prediction shift."""
    n, n_correct = tallies["n"], tallies["n_correct"]
    clean_hist, trig_hist = tallies["pred_hist_clean"], tallies["pred_hist_trig"]
    shift = [(t - c) / n for c, t in zip(clean_hist, trig_hist, strict=True)] if n else [0.0] * len(clean_hist)
    out: dict[str, Any] = {
        "n": n, "n_correct": n_correct,
        "clean_acc": n_correct / n if n else None,
        "triggered_acc": tallies["n_triggered_correct"] / n if n else None,
        "asr": tallies["n_flipped"] / n_correct if n_correct else None,
        "asr_targeted": tallies["n_to_target"] / tallies["n_not_target"] if tallies["n_not_target"] else None,
        "pred_hist_clean": clean_hist, "pred_hist_trig": trig_hist,
        "tv_pred_shift": 0.5 * sum(abs(v) for v in shift),
        "top_shift_class": max(range(len(shift)), key=lambda c: (shift[c], -c)) if n else None,
    }
    out["delta_acc"] = None if out["clean_acc"] is None else out["clean_acc"] - out["triggered_acc"]
    return out


def bias_metrics(clean_pred: torch.Tensor, triggered_pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 target_label: int | None = None, exclude: set[int] | None = None) -> dict[str, Any]:
    """The trigger's attack success rate and accuracy drop (:func:`bias_from_tallies`) on these predictions."""
    return bias_from_tallies(bias_tallies(clean_pred, triggered_pred, labels, num_classes, target_label, exclude))


def group_tallies(pred: torch.Tensor, labels: torch.Tensor, attribute: torch.Tensor, num_classes: int
                  ) -> dict[str, Any]:
    """The counts behind :func:`group_gaps`: rows and correct rows per class, and predictions per class, with
    and without the attribute."""
    attribute = attribute.bool()
    out = {}
    for name, rows in (("with", attribute), ("without", ~attribute)):
        out[f"class_n_{name}"] = torch.bincount(labels[rows], minlength=num_classes).tolist()
        out[f"class_correct_{name}"] = torch.bincount(labels[rows & (pred == labels)], minlength=num_classes).tolist()
        out[f"pred_hist_{name}"] = torch.bincount(pred[rows], minlength=num_classes).tolist()
    return out


def group_from_tallies(tallies: dict[str, Any]) -> dict[str, Any]:
    """Natural-feature bias (thesis §7.3): per class, accuracy with the attribute minus without, and
    P(pred = k | attribute) − P(pred = k | no attribute). None where a group is empty."""
    n_with, n_without = sum(tallies["pred_hist_with"]), sum(tallies["pred_hist_without"])
    accuracy_gap = [a / na - b / nb if na and nb else None for a, na, b, nb in
                    zip(tallies["class_correct_with"], tallies["class_n_with"], tallies["class_correct_without"],
                        tallies["class_n_without"], strict=True)]
    prediction_gap = [a / n_with - b / n_without if n_with and n_without else None
                      for a, b in zip(tallies["pred_hist_with"], tallies["pred_hist_without"], strict=True)]
    return {"n_with": n_with, "n_without": n_without, "acc_gap_per_class": accuracy_gap, "pred_gap": prediction_gap}


def group_gaps(pred: torch.Tensor, labels: torch.Tensor, attribute: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Per-class accuracy and prediction gaps between rows with and without a 0/1 attribute."""
    return group_from_tallies(group_tallies(pred, labels, attribute, num_classes))


def triggered_predictions(model, dataset, trigger: dict[str, Any], *, batch_size: int, device, workers=None,
                          stamp_records: bool = True, rank: int = 0, world: int = 1
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A model's predictions on ``dataset`` (its part ``rank`` of ``world``: every ``world``-th row) as it is and
    with ``trigger`` stamped after the model's preprocessing, and the labels, streamed. ``stamp_records=False``
    leaves the records' own deferred triggers off (``asr`` measures its trigger on clean images)."""
    from confidently.data.loader import StreamLoader
    from confidently.data.preprocess import DataConfig, make_preprocess
    from confidently.data.triggers import stamp_rows
    from confidently.evaluation import paired_predictions

    batches = StreamLoader(dataset, make_preprocess("eval", DataConfig.of(model)), batch_size=batch_size,
                           device=device, workers=workers, stamp=stamp_records, rank=rank, world=world,
                           describe="clean and triggered")
    return paired_predictions(model, batches, lambda images: stamp_rows(images, [trigger] * len(images)))


def asr_metrics(tallies: dict[str, Any], group_attr: str | None = None) -> dict[str, Any]:
    """An asr record's metrics from its tallies, the per-class gaps of attribute ``group_attr`` too where counted."""
    metrics = bias_from_tallies({k: v for k, v in tallies.items() if k != "group"})
    if "group" in tallies:
        metrics["group"] = {**({"attr": group_attr} if group_attr else {}), **group_from_tallies(tallies["group"])}
    return metrics


def trigger_bias(model, dataset, trigger: dict[str, Any], *, batch_size: int, device, workers=None,
                 target_label: int | None = None, exclude: set[int] | None = None, group_attr: str | None = None,
                 group: Sequence[bool] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """How ``trigger``, stamped on the clean images, moves a model's predictions: (metrics, the tallies they come
    from, which add up over shards). ``target_label`` adds the targeted ASR, ``exclude`` leaves classes out,
    ``group`` (one 0/1 value of attribute ``group_attr`` per row) adds the per-class gaps with vs without it."""
    if target_label is not None and not 0 <= target_label < model.num_classes:
        raise UsageError(f"target_label {target_label} is outside 0..{model.num_classes - 1}")
    clean_pred, trig_pred, labels = triggered_predictions(model, dataset, trigger, batch_size=batch_size,
                                                          device=device, workers=workers, stamp_records=False)
    tallies = bias_tallies(clean_pred, trig_pred, labels, model.num_classes, target_label, exclude)
    if group is not None:
        tallies["group"] = group_tallies(clean_pred, labels, torch.tensor(list(group), dtype=torch.bool),
                                         model.num_classes)
    return asr_metrics(tallies, group_attr), tallies


def merge_bias_shards(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of one asr run over everything from its ``--shard i/N`` records: tallies summed, metrics
    computed again, so they equal the unsharded run's."""
    merged = merge_shards(records, ASR_COMPUTED, asr_metrics)
    for record in merged:
        if record.get("group_attr"):
            record["group"] = {"attr": record["group_attr"], **record["group"]}
    return merged


def prediction_skew(clean_pred: torch.Tensor, overlaid_pred: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """How an overlaid feature skews the class histogram: its top class and share, the total variation to the
    clean histogram, the KL divergence to uniform (0 when spread evenly), and the share of changed predictions."""
    clean_hist = torch.bincount(clean_pred, minlength=num_classes).double()
    over_hist = torch.bincount(overlaid_pred, minlength=num_classes).double()
    n = max(len(clean_pred), 1)
    share = over_hist / n
    positive = share[share > 0]
    return {"n": len(clean_pred), "hist_clean": clean_hist.long().tolist(), "hist_overlay": over_hist.long().tolist(),
            "top_class": int(share.argmax()), "top_share": float(share.max()),
            "tv_to_clean": float(0.5 * (share - clean_hist / n).abs().sum()),
            "kl_to_uniform": float((positive * (positive * num_classes).log()).sum()),
            "changed": float((clean_pred != overlaid_pred).double().mean())}


def overlay_skew(model, dataset, overlay: dict[str, Any], *, batch_size: int, device, workers=None
                 ) -> dict[str, Any]:
    """:func:`prediction_skew` of a model on ``dataset`` with and without ``overlay`` (a trigger spec, e.g. the
    chain-link stencil): a model that inherited the feature piles its predictions onto a few classes."""
    clean, overlaid, _ = triggered_predictions(model, dataset, overlay, batch_size=batch_size, device=device,
                                               workers=workers, stamp_records=False)
    return prediction_skew(clean, overlaid, model.num_classes)
