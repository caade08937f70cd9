"""The influence estimator (thesis eq. 8.1): mean output of models that saw a unit minus the mean of
those that did not, from additive sums — so shards merge exactly and targets stream in blocks.

Infl = S_in / c_in − (ΣY − S_in) / (m − c_in), S_in = Mᵀ Y, c_in = Mᵀ 1; standard errors from the
matching sums of squares. The linear datamodels (``confidently.influence.estimators``: ridge, lasso) fit
from :class:`GramSums`, the same kind of additive sums (MᵀM, MᵀY, ... per cross-validation fold).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError

GRAM_KEYS = ("count", "x", "xx", "xy", "y", "yy")


@dataclass
class GramSums:
    """The linear datamodel's sufficient statistics, per cross-validation fold (a job's fold is its job id
    modulo the number of folds, so shards of a farm merge exactly): model count, ΣM (K), MᵀM (K×K), MᵀY
    (K×n), ΣY and ΣY² (n) of the 0/1 masks M and outputs Y. Centring (the intercept) happens on these sums,
    never on M, so the masks stay 0/1 (sparse-friendly) and nothing is m×m."""

    count: torch.Tensor  # F
    x: torch.Tensor  # F×K
    xx: torch.Tensor  # F×K×K
    xy: torch.Tensor  # F×K×n
    y: torch.Tensor  # F×n
    yy: torch.Tensor  # F×n

    @classmethod
    def empty(cls, folds: int, units: int, targets: int) -> GramSums:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(folds, *shape, dtype=torch.float64)

        return cls(zeros(), zeros(units), zeros(units, units), zeros(units, targets), zeros(targets), zeros(targets))

    @property
    def folds(self) -> int:
        return len(self.count)

    def add(self, masks: torch.Tensor, outputs: torch.Tensor, job_ids: torch.Tensor) -> None:
        fold_of = job_ids.long() % self.folds
        for fold in range(self.folds):
            rows = fold_of == fold
            if bool(rows.any()):
                m, y = masks[rows], outputs[rows]
                self.count[fold] += len(m)
                self.x[fold] += m.sum(0)
                self.xx[fold] += m.T @ m
                self.xy[fold] += m.T @ y
                self.y[fold] += y.sum(0)
                self.yy[fold] += y.square().sum(0)

    def merge(self, other: GramSums) -> GramSums:
        if self.xy.shape != other.xy.shape:
            raise InvalidInput(f"partial estimates differ in folds × units × targets ({tuple(self.xy.shape)} vs "
                               f"{tuple(other.xy.shape)}); only partials written with the same --folds merge")
        return GramSums(*(getattr(self, key) + getattr(other, key) for key in GRAM_KEYS))


@dataclass
class InfluenceSums:
    """Sufficient statistics over models: sums are float64 so merging never loses precision. ``gram`` (the
    linear datamodels' sums, see :class:`GramSums`) is kept only when asked for (``folds`` > 0)."""

    sum_in: torch.Tensor  # K×n: Σ over models that included unit k of their outputs
    sumsq_in: torch.Tensor  # K×n
    sum_y: torch.Tensor  # n
    sumsq_y: torch.Tensor  # n
    n_in: torch.Tensor  # K (int64)
    models: int
    labels: torch.Tensor  # n target labels (for per-class aggregates)
    gram: GramSums | None = None

    @classmethod
    def empty(cls, units: int, labels: torch.Tensor, folds: int = 0) -> InfluenceSums:
        """No models yet; ``folds`` > 0 also keeps the linear datamodels' sums, in that many folds."""
        targets = len(labels)
        return cls(torch.zeros(units, targets, dtype=torch.float64), torch.zeros(units, targets, dtype=torch.float64),
                   torch.zeros(targets, dtype=torch.float64), torch.zeros(targets, dtype=torch.float64),
                   torch.zeros(units, dtype=torch.int64), 0, labels.long().clone(),
                   GramSums.empty(folds, units, targets) if folds > 0 else None)

    def add(self, masks: torch.Tensor, outputs: torch.Tensor, job_ids: torch.Tensor | None = None) -> InfluenceSums:
        """Add models: ``masks`` m×K booleans (unit included) and ``outputs`` m×n; ``job_ids`` (m) pick each
        model's fold for the linear datamodels (default: the order models are added in)."""
        masks = masks.to(torch.float64)
        outputs = outputs.to(torch.float64)
        if masks.shape[1] != self.sum_in.shape[0] or outputs.shape[1] != self.sum_in.shape[1]:
            raise InvalidInput(f"results have {masks.shape[1]} units × {outputs.shape[1]} targets; the estimate has "
                               f"{self.sum_in.shape[0]} × {self.sum_in.shape[1]}")
        if self.gram is not None:
            ids = torch.arange(self.models, self.models + len(masks)) if job_ids is None else torch.as_tensor(job_ids)
            self.gram.add(masks, outputs, ids)
        self.sum_in += masks.T @ outputs
        self.sumsq_in += masks.T @ outputs.square()
        self.sum_y += outputs.sum(0)
        self.sumsq_y += outputs.square().sum(0)
        self.n_in += masks.sum(0).round().long()
        self.models += len(masks)
        return self

    def merge(self, other: InfluenceSums) -> InfluenceSums:
        if self.sum_in.shape != other.sum_in.shape or not torch.equal(self.labels, other.labels):
            raise InvalidInput("partial estimates differ in units, targets or labels; only shards of one run merge")
        gram = self.gram.merge(other.gram) if self.gram is not None and other.gram is not None else None
        return InfluenceSums(self.sum_in + other.sum_in, self.sumsq_in + other.sumsq_in, self.sum_y + other.sum_y,
                             self.sumsq_y + other.sumsq_y, self.n_in + other.n_in, self.models + other.models,
                             self.labels, gram)

    def tensors(self) -> dict[str, torch.Tensor]:
        gram = {f"gram/{key}": getattr(self.gram, key) for key in GRAM_KEYS} if self.gram is not None else {}
        return {"sum_in": self.sum_in, "sumsq_in": self.sumsq_in, "sum_y": self.sum_y, "sumsq_y": self.sumsq_y,
                "n_in": self.n_in, "models": torch.tensor([self.models]), "labels": self.labels, **gram}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> InfluenceSums:
        missing = {"sum_in", "sumsq_in", "sum_y", "sumsq_y", "n_in", "models", "labels"} - set(tensors)
        if missing:
            raise InvalidInput(f"not a partial influence estimate (missing {', '.join(sorted(missing))})")
        gram = GramSums(*(tensors[f"gram/{key}"].double() for key in GRAM_KEYS)) \
            if all(f"gram/{key}" in tensors for key in GRAM_KEYS) else None
        return cls(tensors["sum_in"].double(), tensors["sumsq_in"].double(), tensors["sum_y"].double(),
                   tensors["sumsq_y"].double(), tensors["n_in"].long(), int(tensors["models"][0]),
                   tensors["labels"].long(), gram)


@dataclass
class Influence:
    """An estimate: per (unit, target) influence — whatever the estimator, a linear model of the outputs,
    f(t_j; S) ≈ ``intercept``[j] + Σ_{k∈S} ``influence``[k, j] — with its summaries. ``penalty`` (n) is the
    regularisation a linear datamodel chose per target; ``details`` what the estimate's metadata records of
    the estimator."""

    influence: torch.Tensor  # K×n
    stderr: torch.Tensor  # K×n (NaN where the estimator has none)
    n_in: torch.Tensor  # K
    n_out: torch.Tensor  # K
    overall: torch.Tensor  # K: mean over targets
    per_class: torch.Tensor  # K×C: mean over the targets of each label
    labels: torch.Tensor  # n
    intercept: torch.Tensor | None = None  # n
    penalty: torch.Tensor | None = None  # n
    details: dict[str, Any] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of an estimate file (``influence.safetensors``)."""
        extra = {name: value for name, value in (("intercept", self.intercept), ("penalty", self.penalty))
                 if value is not None}
        return {"influence": self.influence, "stderr": self.stderr, "n_in": self.n_in, "n_out": self.n_out,
                "overall": self.overall, "per_class": self.per_class, "labels": self.labels, **extra}


def degenerate_units(sums: InfluenceSums) -> torch.Tensor:
    """Units in every model or in none (K booleans): no estimator can tell their effect; warns when any."""
    degenerate = (sums.n_in == 0) | (sums.n_in == sums.models)
    if bool(degenerate.any()):
        warnings.warn(f"{int(degenerate.sum())} units were in every model or in none: their influence is NaN",
                      stacklevel=3)
    return degenerate


def intercept_of(sums: InfluenceSums, influence: torch.Tensor) -> torch.Tensor:
    """The intercept that makes the linear model's mean prediction the models' mean output: ȳ − μᵀ·influence
    (a NaN influence counts as 0)."""
    mean_mask = sums.n_in.double() / max(sums.models, 1)
    return sums.sum_y / max(sums.models, 1) - mean_mask @ influence.double().nan_to_num(0.0)


def finish(sums: InfluenceSums, influence: torch.Tensor, stderr: torch.Tensor, degenerate: torch.Tensor,
           **extra: Any) -> Influence:
    """An :class:`Influence` from per-(unit, target) values: NaN for ``degenerate`` units, the intercept, the
    overall and per-class means."""
    influence, stderr = influence.clone(), stderr.clone()
    influence[degenerate] = float("nan")
    stderr[degenerate] = float("nan")
    classes = int(sums.labels.max()) + 1 if len(sums.labels) else 0
    per_class = torch.stack([influence[:, sums.labels == c].mean(1) if bool((sums.labels == c).any())
                             else torch.full((len(influence),), float("nan"), dtype=influence.dtype)
                             for c in range(classes)], dim=1) if classes else torch.empty(len(influence), 0)
    return Influence(influence.float(), stderr.float(), sums.n_in, sums.models - sums.n_in,
                     influence.mean(1).float(), per_class.float(), sums.labels,
                     intercept=intercept_of(sums, influence).float(), **extra)


def estimate(sums: InfluenceSums) -> Influence:
    """Difference of means per (unit, target) with standard errors; NaN (and a warning) for a unit that
    every model, or no model, saw."""
    n_in = sums.n_in.double()[:, None]
    n_out = sums.models - n_in
    degenerate = degenerate_units(sums)
    with torch.no_grad():
        mean_in = sums.sum_in / n_in
        sum_out = sums.sum_y[None, :] - sums.sum_in
        mean_out = sum_out / n_out
        var_in = (sums.sumsq_in / n_in - mean_in.square()).clamp_min(0) * n_in / (n_in - 1).clamp_min(1)
        var_out = ((sums.sumsq_y[None, :] - sums.sumsq_in) / n_out - mean_out.square()).clamp_min(0) * n_out / \
            (n_out - 1).clamp_min(1)
        influence = mean_in - mean_out
        stderr = (var_in / n_in + var_out / n_out).sqrt()
    return finish(sums, influence, stderr, degenerate, details={"estimator": "diff-means"})


def bootstrap_std(masks: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor, resamples: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Per-unit std of overall influence over bootstrap resamples of the models (thesis H.1.5)."""
    values = []
    for _ in range(resamples):
        pick = torch.randint(0, len(masks), (len(masks),), generator=generator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values.append(estimate(InfluenceSums.empty(masks.shape[1], labels).add(masks[pick], outputs[pick])).overall)
    return torch.stack(values).std(0)


def bootstrap_convergence(masks: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor,
                          m_grid: list[int] | None = None, resamples: int = 100,
                          seed: int = 0) -> Iterator[dict[str, Any]]:
    """The bootstrap spread of overall influence from the first m models, for each m of ``m_grid`` (default:
    a quarter, half and all of them): it should shrink like 1/√m, else more models are needed."""
    total = len(masks)
    grid = m_grid or sorted({max(2, total // 4), max(2, total // 2), total})
    if any(m < 2 or m > total for m in grid):
        raise UsageError(f"m_grid values must lie in 2..{total} (the number of result files)")
    generator = torch.Generator().manual_seed(seed)
    for m in grid:
        spread = bootstrap_std(masks[:m], outputs[:m], labels, resamples, generator)
        finite = spread[~spread.isnan()]  # none when every unit was in all or none of some resample's models
        yield {"kind": "influence.diag", "metric": "bootstrap_std", "models": m, "resamples": resamples,
               "mean_std": float(spread.nanmean()), "max_std": float(finite.max()) if len(finite) else float("nan")}
