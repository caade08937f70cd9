"""What ridge and lasso share: a linear datamodel fitted from :class:`GramSums`.

For every target j the model is f(t_j; S) ≈ b_j + Σ_k β_kj·M_k with M the 0/1 inclusion mask. Masks and
outputs are centred (the intercept b_j = ȳ_j − μᵀβ_j) on the sums, never on M: with m models,
G = (MᵀM − m μμᵀ)/m (K×K) and c = (MᵀY − m μȳᵀ)/m (K×n), and every target is fitted at once (a K×K system
with n right-hand sides). Nothing is m×m and nothing per model is kept.

The penalty is chosen by F-fold cross-validation over the farm's jobs (fold = job id mod F, so shards of a
farm merge exactly): for each fold, fit on the other folds over a small log grid of penalties, add the fold's
squared error (computed from the fold's sums), and take the grid point with the least error — per target
(default) or one for all targets (``scope="global"``: least error summed over targets, each scaled by its
output variance). The chosen penalty is then refitted on every model. A given ``penalty`` skips the search.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.influence.estimate import GramSums, Influence, InfluenceSums, degenerate_units, finish

SCOPES = ("per-target", "global")


@dataclass
class Moments:
    """Sums of one set of models (a fold, the others, or all): count, ΣM, MᵀM, MᵀY, ΣY, ΣY²."""

    count: torch.Tensor  # scalar
    x: torch.Tensor  # K
    xx: torch.Tensor  # K×K
    xy: torch.Tensor  # K×n
    y: torch.Tensor  # n
    yy: torch.Tensor  # n

    @classmethod
    def of(cls, gram: GramSums, folds: torch.Tensor) -> Moments:
        """The sums over the folds marked in ``folds`` (F booleans)."""
        return cls(*(getattr(gram, key)[folds].sum(0) for key in ("count", "x", "xx", "xy", "y", "yy")))

    def centred(self) -> Problem:
        m = self.count.clamp_min(1)
        mean_x, mean_y = self.x / m, self.y / m
        gram = self.xx / m - torch.outer(mean_x, mean_x)
        cross = self.xy / m - torch.outer(mean_x, mean_y)
        return Problem(float(self.count), mean_x, mean_y, (gram + gram.T) / 2, cross)

    def squared_error(self, beta: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
        """Σ over these models of (y − b − mᵀβ)², per target (n), from the sums alone."""
        fitted = self.x @ beta  # n: Σ_i m_iᵀβ
        return (self.yy - 2 * intercept * self.y - 2 * (beta * self.xy).sum(0) + self.count * intercept.square()
                + 2 * intercept * fitted + (beta * (self.xx @ beta)).sum(0)).clamp_min(0)

    def variance(self) -> torch.Tensor:
        """Σ (y − ȳ)² per target: the error of the intercept-only model."""
        return (self.yy - self.y.square() / self.count.clamp_min(1)).clamp_min(0)


@dataclass
class Problem:
    """A centred least-squares problem: minimise ½βᵀGβ − cᵀβ + penalty, per target (column of c)."""

    count: float
    mean_x: torch.Tensor  # K
    mean_y: torch.Tensor  # n
    gram: torch.Tensor  # G, K×K
    cross: torch.Tensor  # c, K×n

    def intercept(self, beta: torch.Tensor) -> torch.Tensor:
        return self.mean_y - self.mean_x @ beta


class LinearDatamodel:
    """A penalised linear regression of the outputs on the masks. Subclasses give the penalty's ``kind``,
    the ``factors`` of its grid, the per-target ``scale`` the factors multiply and the ``path`` of solutions
    over a grid; ``stderr`` is NaN unless they know better."""

    needs_gram = True
    name = ""
    kind = ""  # "l2" / "l1"
    objective = ""
    factors: tuple[float, ...] = ()
    scale_meaning = ""

    def scale(self, problem: Problem, scope: str) -> torch.Tensor:
        """What the grid's factors multiply, per target (n): the same for every target when ``scope`` is
        global, so that one penalty is chosen for all."""
        raise NotImplementedError

    def path(self, problem: Problem, penalties: torch.Tensor) -> Iterator[torch.Tensor]:
        """β (K×n) for each row of ``penalties`` (L×n: one penalty per target), in order."""
        raise NotImplementedError

    def stderr(self, problem: Problem, beta: torch.Tensor, penalty: torch.Tensor,
               error: torch.Tensor) -> torch.Tensor:
        return torch.full_like(beta, float("nan"))

    def __call__(self, sums: InfluenceSums, penalty: float | None = None, scope: str = "per-target",
                 device: str | torch.device | None = None) -> Influence:
        if scope not in SCOPES:
            raise UsageError(f"penalty scope {scope!r}: choose {' or '.join(SCOPES)}")
        if penalty is not None and penalty < 0:
            raise UsageError(f"penalty {penalty}: expected a value >= 0")
        gram = GramSums(*(getattr(sums.gram, key).to(device) for key in ("count", "x", "xx", "xy", "y", "yy"))) \
            if device is not None else sums.gram
        everything = torch.ones(gram.folds, dtype=torch.bool, device=gram.count.device)
        full = Moments.of(gram, everything)
        if float(full.count) < 3:
            raise UsageError(f"the {self.name} estimator needs at least 3 models (got {int(full.count)})")
        problem = full.centred()
        degenerate = degenerate_units(sums)
        regularisation: dict[str, Any] = {"penalty": self.kind, "objective": self.objective}
        if penalty is not None:
            chosen = torch.full_like(problem.mean_y, float(penalty))
            (beta,) = self.path(problem, chosen[None])
            regularisation.update(chosen_by="given", scope="global", chosen=float(penalty))
        else:
            grid = torch.tensor(self.factors, dtype=torch.float64, device=problem.mean_y.device)[:, None] * \
                self.scale(problem, scope)[None, :]
            error, folds = self.cross_validate(gram, grid)
            if scope == "per-target":
                pick = error.argmin(0)
            else:
                spread = full.variance()
                weight = torch.where(spread > 0, 1 / spread.clamp_min(1e-300), torch.zeros_like(spread))
                pick = torch.full_like(problem.mean_y, int((error * weight).sum(1).argmin()), dtype=torch.long)
            chosen = grid.gather(0, pick[None])[0]
            beta = torch.zeros_like(problem.cross)
            for row, solution in enumerate(self.path(problem, grid)):
                beta[:, pick == row] = solution[:, pick == row]
            cv_mse = error.gather(0, pick[None])[0] / full.count
            regularisation.update(
                chosen_by=f"{folds}-fold cross-validation", scope=scope, folds=folds, grid=list(self.factors),
                grid_scale=self.scale_meaning,
                chosen=float(chosen[0]) if scope == "global" else
                {"median": float(chosen.median()), "min": float(chosen.min()), "max": float(chosen.max())},
                cv_mse=float(cv_mse.mean()))
        intercept = problem.intercept(beta)
        stderr = self.stderr(problem, beta, chosen, full.squared_error(beta, intercept))
        return finish(sums, beta.cpu(), stderr.cpu(), degenerate, penalty=chosen.float().cpu(),
                      details={"estimator": self.name, "regularisation": regularisation})

    def cross_validate(self, gram: GramSums, grid: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Held-out squared error (L×n) of each grid penalty, summed over the folds; the folds used."""
        error = torch.zeros_like(grid)
        used = 0
        for fold in range(gram.folds):
            held = torch.zeros(gram.folds, dtype=torch.bool, device=grid.device)
            held[fold] = True
            fold_sums, rest = Moments.of(gram, held), Moments.of(gram, ~held)
            if float(fold_sums.count) == 0 or float(rest.count) < 2:
                continue
            problem = rest.centred()
            for row, beta in enumerate(self.path(problem, grid)):
                error[row] += fold_sums.squared_error(beta, problem.intercept(beta))
            used += 1
        if used < 2:
            raise UsageError(f"choosing the {self.name} penalty by cross-validation needs models in at least 2 "
                             f"folds (have {used}); add models or give the penalty")
        return error, used
