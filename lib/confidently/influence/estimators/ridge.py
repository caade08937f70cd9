"""``ridge``: the linear datamodel with an L2 penalty, in closed form for every target at once.

Minimises (1/2m)·‖Y_c − M_cβ‖² + (λ/2)·‖β‖² per target: β = (G + λI)⁻¹c from one eigendecomposition of
G (K×K), so every penalty of the grid and every target (n right-hand sides) cost a matrix product each.
λ is chosen per target by 5-fold cross-validation over λ = f·s, f in 10^-4 … 10^3 (half decades) and s the
masks' mean centred variance (≈ α(1 − α)), unless given (see
:mod:`confidently.influence.estimators.linear`). With λ → 0 this is least squares; when G is singular —
fixed-size subsets make Σ_k M_k constant, so only differences between units are identifiable — it is the
minimum-norm solution, whose influences sum to 0 over the units of each target (the difference of means
estimates K/(K − 1) times the same centred quantity under fixed-size sampling).

Standard errors are the usual ridge ones, σ̂²/m · Q diag(e/(e + λ)²) Qᵀ on the diagonal, with σ̂² the
residual variance over m − 1 − df degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from confidently.influence.estimators import register_estimator
from confidently.influence.estimators.linear import LinearDatamodel, Problem


def _spectrum(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(problem.gram)
    return values.clamp_min(0), vectors


def _inverse(values: torch.Tensor, penalties: torch.Tensor) -> torch.Tensor:
    """1/(e + λ) (K×n), 0 where e + λ vanishes (a pseudo-inverse: the minimum-norm solution)."""
    denominator = values[:, None] + penalties[None, :]
    floor = 1e-10 * float(values.max().clamp_min(1e-300))
    return torch.where(denominator > floor, 1 / denominator.clamp_min(floor), torch.zeros_like(denominator))


class Ridge(LinearDatamodel):
    name = "ridge"
    kind = "l2"
    objective = "(1/2m)·||y − b − Mβ||² + (λ/2)·||β||²"
    factors = tuple(10.0 ** (k / 2) for k in range(-8, 7))
    scale_meaning = "mean variance of the centred masks"

    def scale(self, problem: Problem, scope: str) -> torch.Tensor:
        return torch.full_like(problem.mean_y, float(problem.gram.diagonal().mean().clamp_min(1e-12)))

    def path(self, problem: Problem, penalties: torch.Tensor) -> Iterator[torch.Tensor]:
        values, vectors = _spectrum(problem)
        projected = vectors.T @ problem.cross
        for row in penalties:
            yield vectors @ (projected * _inverse(values, row))

    def stderr(self, problem: Problem, beta: torch.Tensor, penalty: torch.Tensor,
               error: torch.Tensor) -> torch.Tensor:
        values, vectors = _spectrum(problem)
        inverse = _inverse(values, penalty)  # K×n
        shrink = values[:, None] * inverse  # e/(e + λ)
        freedom = shrink.sum(0)  # effective parameters per target
        residual = error / (problem.count - 1 - freedom).clamp_min(1)
        return (residual / problem.count * (vectors.square() @ (shrink * inverse))).sqrt()


register_estimator("ridge")(Ridge())
