"""Dataset figures recomputed from per-image records (so shards merge by ``cat``; never averaged averages)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from confidently.missingness.consistency import expected_random_jaccard
from confidently.missingness.curve import curve_auc


def class_entropy(predictions: Sequence[int]) -> float:
    """Entropy (nats) of the predicted-class histogram; 0 when one class takes all, ln C when uniform."""
    counts = Counter(predictions)
    total = sum(counts.values())
    return max(0.0, -sum(c / total * math.log(c / total) for c in counts.values())) if total else 0.0


def _check_same(records: Sequence[dict], key: str) -> Any:
    values = {str(r[key]) for r in records}
    if len(values) > 1:
        raise ValueError(f"records differ in {key!r} ({', '.join(sorted(values)[:3])}); summarize one run at a time")
    return records[0][key]


def summarize_curves(records: Sequence[dict], num_classes: int | None = None, classes: Sequence[str] | None = None,
                     similarity: torch.Tensor | None = None, top: int = 30) -> dict[str, Any]:
    """U_k, class entropy (nats and / ln min(C, N)), WordNet-style similarity of changed predictions,
    mean probability of the clean class, and the class histogram at k = F/2 (``ablate-curve`` records)."""
    if not records:
        raise ValueError("no curve records to summarize")
    ks = _check_same(records, "ks")
    n = len(records)
    pred0 = [r["pred0"] for r in records]
    num_classes = num_classes or (len(classes) if classes else max(max(r["pred"]) for r in records) + 1)
    norm = math.log(min(num_classes, n)) if min(num_classes, n) > 1 else 1.0
    unchanged, entropy, wup, p_mean = [], [], [], []
    for j in range(len(ks)):
        preds = [r["pred"][j] for r in records]
        unchanged.append(sum(p == q for p, q in zip(preds, pred0, strict=True)) / n)
        entropy.append(class_entropy(preds))
        p_mean.append(math.fsum(r["p_orig"][j] for r in records) / n)  # exact: shard order cannot matter
        if similarity is not None:
            changed = [float(similarity[q, p]) for p, q in zip(preds, pred0, strict=True) if p != q]
            wup.append(math.fsum(changed) / len(changed) if changed else None)
    half = min(range(len(ks)), key=lambda j: abs(ks[j] - ks[-1] / 2))
    share = Counter(r["pred"][half] for r in records)
    share0 = Counter(pred0)

    def name(c: int) -> str | int:
        return classes[c] if classes and c < len(classes) else c

    return {
        "tool": "ablate", "schema": "ablate-curve-summary/v1", "n": n, "ks": ks,
        "fill": _check_same(records, "fill"), "order": _check_same(records, "order"),
        "frac_unchanged": unchanged, "class_entropy_nats": entropy,
        "class_entropy_norm": [h / norm for h in entropy], "entropy_max_nats": norm,
        "wup_changed": wup if similarity is not None else None, "p_orig_mean": p_mean,
        "auc_unchanged": curve_auc(ks, unchanged), "k_half": ks[half],
        "top_classes_at_half": [[name(c), count / n, (count - share0.get(c, 0)) / n]
                                for c, count in sorted(share.items(), key=lambda item: (-item[1], item[0]))[:top]],
    }


def summarize_consistency(records: Sequence[dict]) -> dict[str, Any]:
    """Mean Jaccard over images and pairs per k, a 95 % interval over the pair means, and chance level."""
    if not records:
        raise ValueError("no consistency records to summarize")
    ks = _check_same(records, "ks")
    count = _check_same(records, "features")
    pairs = torch.tensor([r["jaccard"] for r in records], dtype=torch.float64)  # N×P×K
    pair_means = pairs.sort(dim=0).values.sum(0) / len(pairs)  # P×K; sorted first so shard order cannot matter
    mean = pair_means.mean(0)
    spread = 1.96 * pair_means.std(0, unbiased=True) / math.sqrt(len(pair_means)) if len(pair_means) > 1 else \
        torch.zeros_like(mean)
    return {"tool": "ablate", "schema": "ablate-consistency-summary/v1", "n": len(records), "ks": ks,
            "pairs": pairs.shape[1], "fills": _check_same(records, "fills"), "jaccard_mean": mean.tolist(),
            "ci95": [[float(m - s), float(m + s)] for m, s in zip(mean, spread, strict=True)],
            "random_reference": [expected_random_jaccard(count, k) for k in ks]}


def summarize_topk(records: Sequence[dict]) -> dict[str, Any]:
    """Fraction unchanged per explanation source and k, and each source's area under the curve
    (smaller = the explanation finds what the model relies on = more faithful)."""
    if not records:
        raise ValueError("no top-k records to summarize")
    ks = _check_same(records, "ks")
    names = list(records[0]["unchanged"])
    sources = {}
    for name in names:
        if any(name not in r["unchanged"] for r in records):
            raise ValueError(f"source {name!r} is missing from some records; summarize one run at a time")
        curve = [sum(r["unchanged"][name][j] for r in records) / len(records) for j in range(len(ks))]
        sources[name] = {"frac_unchanged": curve, "auc": curve_auc(ks, curve)}
    return {"tool": "ablate", "schema": "ablate-topk-summary/v1", "n": len(records), "ks": ks,
            "keep_top": _check_same(records, "keep_top"), "sources": sources}
