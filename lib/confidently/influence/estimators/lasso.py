"""``lasso``: the linear datamodel with an L1 penalty (the datamodels papers' choice), sparse influences.

Minimises (1/2m)·‖Y_c − M_cβ‖² + λ·‖β‖₁ per target by FISTA (accelerated proximal gradient with adaptive
restart) on the centred Gram matrix, every target at once, warm-started down the penalty path. λ is chosen
per target by 5-fold cross-validation over λ = f·λ_max, f in 1 … 10^-4 (13 points, λ_max the smallest
penalty that gives β = 0 for that target; with one global penalty, the largest over targets), unless given
(see :mod:`confidently.influence.estimators.linear`).
Under fixed-size subsets only differences between units are identifiable; the L1 penalty then picks the
sparsest of the equivalent solutions. No standard errors (NaN): the lasso has no simple closed form.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from confidently.influence.estimators import register_estimator
from confidently.influence.estimators.linear import LinearDatamodel, Problem


def soft_threshold(values: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return values.sign() * (values.abs() - threshold).clamp_min(0)


def fista(gram: torch.Tensor, cross: torch.Tensor, penalty: torch.Tensor, start: torch.Tensor,
          max_iter: int = 5000, tol: float = 1e-7) -> torch.Tensor:
    """argmin ½βᵀGβ − cᵀβ + Σ_j penalty_j·‖β_j‖₁ for every column j at once, from ``start``; stops when no
    coefficient moves by more than ``tol`` (relative to the largest) in a step."""
    step = 1 / float(torch.linalg.eigvalsh(gram).max().clamp_min(1e-12))
    threshold = (penalty * step)[None, :]
    current, point, momentum = start.clone(), start.clone(), 1.0
    for _ in range(max_iter):
        new = soft_threshold(point - step * (gram @ point - cross), threshold)
        following = (1 + (1 + 4 * momentum ** 2) ** 0.5) / 2
        if float(((point - new) * (new - current)).sum()) > 0:  # overshooting: restart the momentum
            following, point = 1.0, new
        else:
            point = new + ((momentum - 1) / following) * (new - current)
        moved = float((new - current).abs().max())
        current, momentum = new, following
        if moved <= tol * max(float(new.abs().max()), 1e-12):
            break
    return current


class Lasso(LinearDatamodel):
    name = "lasso"
    kind = "l1"
    objective = "(1/2m)·||y − b − Mβ||² + λ·||β||₁"
    factors = tuple(10.0 ** (-k / 3) for k in range(13))
    scale_meaning = "λ_max = max_k |c_k|, the least penalty with β = 0: per target, or (global) the largest"

    def scale(self, problem: Problem, scope: str) -> torch.Tensor:
        largest = problem.cross.abs().amax(0).clamp_min(1e-12)
        return largest if scope == "per-target" else torch.full_like(largest, float(largest.max()))

    def path(self, problem: Problem, penalties: torch.Tensor) -> Iterator[torch.Tensor]:
        beta = torch.zeros_like(problem.cross)
        for row in penalties:
            beta = fista(problem.gram, problem.cross, row, beta)
            yield beta


register_estimator("lasso")(Lasso())
