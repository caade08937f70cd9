"""The influence estimator (thesis eq. 8.1): mean output of models that saw a unit minus the mean of
those that did not, from additive sums — so shards merge exactly and targets stream in blocks.

Infl = S_in / c_in − (ΣY − S_in) / (m − c_in), S_in = Mᵀ Y, c_in = Mᵀ 1; standard errors from the
matching sums of squares.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError


@dataclass
class InfluenceSums:
    """Sufficient statistics over models: sums are float64 so merging never loses precision."""

    sum_in: torch.Tensor  # K×n: Σ over models that included unit k of their outputs
    sumsq_in: torch.Tensor  # K×n
    sum_y: torch.Tensor  # n
    sumsq_y: torch.Tensor  # n
    n_in: torch.Tensor  # K (int64)
    models: int
    labels: torch.Tensor  # n target labels (for per-class aggregates)

    @classmethod
    def empty(cls, units: int, labels: torch.Tensor) -> InfluenceSums:
        targets = len(labels)
        return cls(torch.zeros(units, targets, dtype=torch.float64), torch.zeros(units, targets, dtype=torch.float64),
                   torch.zeros(targets, dtype=torch.float64), torch.zeros(targets, dtype=torch.float64),
                   torch.zeros(units, dtype=torch.int64), 0, labels.long().clone())

    def add(self, masks: torch.Tensor, outputs: torch.Tensor) -> InfluenceSums:
        """Add models: ``masks`` m×K booleans (unit included) and ``outputs`` m×n."""
        masks = masks.to(torch.float64)
        outputs = outputs.to(torch.float64)
        if masks.shape[1] != self.sum_in.shape[0] or outputs.shape[1] != self.sum_in.shape[1]:
            raise InvalidInput(f"results have {masks.shape[1]} units × {outputs.shape[1]} targets; the estimate has "
                               f"{self.sum_in.shape[0]} × {self.sum_in.shape[1]}")
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
        return InfluenceSums(self.sum_in + other.sum_in, self.sumsq_in + other.sumsq_in, self.sum_y + other.sum_y,
                             self.sumsq_y + other.sumsq_y, self.n_in + other.n_in, self.models + other.models,
                             self.labels)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"sum_in": self.sum_in, "sumsq_in": self.sumsq_in, "sum_y": self.sum_y, "sumsq_y": self.sumsq_y,
                "n_in": self.n_in, "models": torch.tensor([self.models]), "labels": self.labels}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> InfluenceSums:
        missing = {"sum_in", "sumsq_in", "sum_y", "sumsq_y", "n_in", "models", "labels"} - set(tensors)
        if missing:
            raise InvalidInput(f"not a partial influence estimate (missing {', '.join(sorted(missing))})")
        return cls(tensors["sum_in"].double(), tensors["sumsq_in"].double(), tensors["sum_y"].double(),
                   tensors["sumsq_y"].double(), tensors["n_in"].long(), int(tensors["models"][0]),
                   tensors["labels"].long())


@dataclass
class Influence:
    influence: torch.Tensor  # K×n
    stderr: torch.Tensor  # K×n
    n_in: torch.Tensor  # K
    n_out: torch.Tensor  # K
    overall: torch.Tensor  # K: mean over targets
    per_class: torch.Tensor  # K×C: mean over the targets of each label
    labels: torch.Tensor  # n

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors of an estimate file (``influence.safetensors``)."""
        return {"influence": self.influence, "stderr": self.stderr, "n_in": self.n_in, "n_out": self.n_out,
                "overall": self.overall, "per_class": self.per_class, "labels": self.labels}


def estimate(sums: InfluenceSums) -> Influence:
    """Difference of means per (unit, target) with standard errors; NaN (and a warning) for a unit that
    every model, or no model, saw."""
    n_in = sums.n_in.double()[:, None]
    n_out = sums.models - n_in
    degenerate = (sums.n_in == 0) | (sums.n_in == sums.models)
    if bool(degenerate.any()):
        warnings.warn(f"{int(degenerate.sum())} units were in every model or in none: their influence is NaN",
                      stacklevel=2)
    with torch.no_grad():
        mean_in = sums.sum_in / n_in
        sum_out = sums.sum_y[None, :] - sums.sum_in
        mean_out = sum_out / n_out
        var_in = (sums.sumsq_in / n_in - mean_in.square()).clamp_min(0) * n_in / (n_in - 1).clamp_min(1)
        var_out = ((sums.sumsq_y[None, :] - sums.sumsq_in) / n_out - mean_out.square()).clamp_min(0) * n_out / \
            (n_out - 1).clamp_min(1)
        influence = mean_in - mean_out
        stderr = (var_in / n_in + var_out / n_out).sqrt()
    influence[degenerate] = float("nan")
    stderr[degenerate] = float("nan")
    classes = int(sums.labels.max()) + 1 if len(sums.labels) else 0
    per_class = torch.stack([influence[:, sums.labels == c].mean(1) if bool((sums.labels == c).any())
                             else torch.full((len(influence),), float("nan"), dtype=influence.dtype)
                             for c in range(classes)], dim=1) if classes else torch.empty(len(influence), 0)
    return Influence(influence.float(), stderr.float(), sums.n_in, sums.models - sums.n_in,
                     influence.mean(1).float(), per_class.float(), sums.labels)


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
