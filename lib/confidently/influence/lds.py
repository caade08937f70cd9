"""The linear datamodeling score (LDS, from the datamodels line of work): how well an estimate, read as the
linear model it is — f(t_j; S) ≈ intercept_j + Σ_{k∈S} influence[k, j] — predicts the outputs of models it
never saw. Per target example, the Spearman rank correlation across held-out models between predicted and
actual output; the score of an estimate is its mean over targets. 1 is a perfect ranking of the held-out
models, 0 what a random (or shuffled) influence matrix gets.

Held-out models are the jobs `influence plan --holdout N` marked (never in an estimate), chosen job ids that
the estimate did not use, or every model of a separate evaluation farm (another plan, same recipe).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, NoValidResult
from confidently.influence.results import FarmResults, held_out, load_results

MIN_MODELS = 3  # two models always rank perfectly or perfectly wrong


def predict(tensors: dict[str, torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """The estimate's prediction of every model's output on every target (m×n): intercept + mask · influence
    (a NaN influence — a unit in every fitted model or none — counts as 0; no intercept, as in estimates made
    before it was stored, as 0, which no rank correlation notices)."""
    influence = tensors["influence"].double().nan_to_num(0.0)
    intercept = tensors.get("intercept")
    base = intercept.double() if intercept is not None else torch.zeros(influence.shape[1], dtype=torch.float64)
    return base[None, :] + masks.double() @ influence


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1..m) of each column of ``values`` (m×n), ties sharing their average rank."""
    count = len(values)
    order = values.argsort(dim=0, stable=True)
    ordered = values.gather(0, order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = starts.long().cumsum(0) - 1
    position = torch.arange(count, dtype=torch.float64)[:, None].expand_as(ordered).contiguous()
    first = torch.full_like(position, float(count)).scatter_reduce(0, group, position, "amin")
    last = torch.zeros_like(position).scatter_reduce(0, group, position, "amax")
    shared = (first.gather(0, group) + last.gather(0, group)) / 2 + 1
    return torch.empty_like(shared).scatter_(0, order, shared)


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each column of ``first`` with the same column of ``second`` (m×n →
    n); NaN where either column is constant."""
    a, b = average_ranks(first.double()), average_ranks(second.double())
    a, b = a - a.mean(0), b - b.mean(0)
    scale = (a.square().sum(0) * b.square().sum(0)).sqrt()
    return torch.where(scale > 0, (a * b).sum(0) / scale.clamp_min(1e-300), torch.full_like(scale, float("nan")))


def linear_datamodeling_score(tensors: dict[str, torch.Tensor], masks: torch.Tensor,
                              outputs: torch.Tensor) -> torch.Tensor:
    """Per target (n), the Spearman correlation across the held-out models (``masks`` m×K, ``outputs`` m×n)
    between the estimate's predicted and their actual output: 0 where the estimate predicts the same for every
    model (it ranks nothing), NaN where the actual outputs are all equal (nothing to rank)."""
    if masks.shape[1] != tensors["influence"].shape[0] or outputs.shape[1] != tensors["influence"].shape[1]:
        raise InvalidInput(f"held-out results have {masks.shape[1]} units × {outputs.shape[1]} targets; the estimate "
                           f"has {tensors['influence'].shape[0]} × {tensors['influence'].shape[1]}")
    predicted = predict(tensors, masks)
    scores = spearman(predicted, outputs)
    flat = (predicted.amax(0) == predicted.amin(0)) & (outputs.amax(0) != outputs.amin(0))
    return torch.where(flat, torch.zeros_like(scores), scores)


def load_holdout(files: list[Path], meta: dict[str, Any], jobs: set[int] | None | str = "marked") -> FarmResults:
    """The held-out models among the result ``files`` for an estimate (its metadata ``meta``), on the target
    and output it was estimated on: the jobs the plan marked (``jobs="marked"``), the job ids ``jobs``, or
    every file (``None``: a separate evaluation farm). Results of another recipe, and jobs the estimate was
    fitted on, are refused: they would make the score meaningless or flattering."""
    if jobs == "marked":
        def keep(info):
            return held_out(info)
    elif jobs is None:
        def keep(info):
            return True
    else:
        def keep(info):
            return info.get("job_id") in jobs
    target, output = meta.get("target"), meta.get("output")
    if not target or not output:
        raise InvalidInput("the estimate's metadata names no target or output; write it with `influence estimate`")
    try:
        found = load_results(files, target, output, keep=keep, selecting=False)
    except NoValidResult:
        raise NoValidResult(f"no held-out results among the {len(files)} files: plan with --holdout N, or name "
                            "held-out jobs (--holdout-jobs IDS, or all for a separate evaluation farm)") from None
    if meta.get("recipe_sha256") and found.meta.get("recipe_sha256") != meta.get("recipe_sha256"):
        raise InvalidInput(f"the held-out results were trained with another recipe than the estimate (checksum "
                           f"{str(found.meta.get('recipe_sha256'))[:12]} vs {str(meta['recipe_sha256'])[:12]})")
    if found.meta.get("plan_sha256") == meta.get("plan_sha256"):
        fitted = set(meta.get("job_ids") or []) & set(found.meta["job_ids"])
        if fitted:
            raise InvalidInput(f"{len(fitted)} held-out jobs (e.g. job {min(fitted)}) were used to fit the estimate: "
                               "a score on them says nothing of unseen models (estimate with --holdout-jobs to set "
                               "them aside)")
    if len(found.masks) < MIN_MODELS:
        raise NoValidResult(f"{len(found.masks)} held-out models: the score needs at least {MIN_MODELS}")
    return found


def lds_records(tensors: dict[str, torch.Tensor], meta: dict[str, Any], holdout: FarmResults, name: str = "",
                per_target: bool = True) -> Iterator[dict[str, Any]]:
    """``influence.lds`` records of the estimate (``tensors``, ``meta``; ``name``: its file) on the held-out
    models: one per target example (with ``per_target``), then their mean (``scope`` "mean")."""
    scores = linear_datamodeling_score(tensors, holdout.masks, holdout.outputs)
    common = {"kind": "influence.lds", "influence": name, "estimator": meta.get("estimator"),
              "target": meta.get("target")}
    if per_target:
        for target, value in enumerate(scores.tolist()):
            yield {**common, "target_index": target, "label": int(holdout.labels[target]), "lds": round(value, 6)}
    defined = scores[~scores.isnan()]
    yield {**common, "scope": "mean", "output": meta.get("output"),
           "lds": round(float(defined.mean()), 6) if len(defined) else None,
           "lds_std": round(float(defined.std()), 6) if len(defined) > 1 else None,
           "targets": len(defined), "holdout_models": len(holdout.masks), "fit_models": meta.get("num_models")}
