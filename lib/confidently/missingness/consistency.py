"""Agreement of explanations: Jaccard of top-k feature sets (thesis Fig 5.8) and its chance level."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import torch


def topk_jaccard(rank_a: torch.Tensor, rank_b: torch.Tensor, ks: Sequence[int]) -> list[float]:
    """J_k = |T_k(a) ∩ T_k(b)| / |T_k(a) ∪ T_k(b)| for each k, T_k the first k features of a ranking."""
    count = len(rank_a)
    pos_a = torch.empty(count, dtype=torch.long)
    pos_b = torch.empty(count, dtype=torch.long)
    pos_a[rank_a.long()] = torch.arange(count)
    pos_b[rank_b.long()] = torch.arange(count)
    out = []
    for k in ks:
        in_a, in_b = pos_a < k, pos_b < k
        union = int((in_a | in_b).sum())
        out.append(int((in_a & in_b).sum()) / union if union else 1.0)
    return out


def pairwise_jaccard(rankings: Sequence[torch.Tensor], ks: Sequence[int]) -> torch.Tensor:
    """P×K Jaccard curves, one per unordered pair of rankings (P = n(n−1)/2, in combinations order)."""
    return torch.tensor([topk_jaccard(a, b, ks) for a, b in combinations(rankings, 2)], dtype=torch.float64)


def expected_random_jaccard(count: int, k: int) -> float:
    """E[J_k] of two independent uniformly random top-k sets out of F: Σ_i H(i; F, k, k) · i / (2k − i)."""
    if k == 0:
        return 1.0
    total = math.comb(count, k)
    return sum(math.comb(k, i) * math.comb(count - k, k - i) / total * i / (2 * k - i)
               for i in range(max(0, 2 * k - count), k + 1))
