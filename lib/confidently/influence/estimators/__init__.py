"""Influence estimators, registered by name; :func:`estimate_influence` is the front door.

- ``diff-means``: the thesis's estimator (eq. 8.1), mean output of the models that saw a unit minus the mean
  of those that did not, with standard errors;
- ``ridge`` and ``lasso``: linear datamodels (the datamodels line of work) — a linear regression of each
  target's output on the 0/1 inclusion masks, with an intercept, L2 or L1 penalised, the penalty chosen by
  cross-validated error.

Every estimator returns an :class:`~confidently.influence.estimate.Influence` (a linear model: intercept +
mask · influence), so the queries, the counterfactual and ``influence lds`` work whatever made it. Adding an
estimator is one registration: ``register_estimator("name")(fn)`` with ``fn(sums, **options) -> Influence``;
an estimator that sets ``fn.needs_gram = True`` fits from the linear datamodels' sums
(:class:`~confidently.influence.estimate.GramSums`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confidently.errors import UsageError
from confidently.registry import Registry

ESTIMATORS: Registry[Callable[..., Any]] = Registry("influence estimator", builtins=(
    "confidently.influence.estimators.diff_means", "confidently.influence.estimators.ridge",
    "confidently.influence.estimators.lasso"))
register_estimator = ESTIMATORS.register
list_estimators = ESTIMATORS.names


def needs_gram(estimator: str) -> bool:
    """Whether ``estimator`` fits from the linear datamodels' sums (then the sums must be made with folds)."""
    return bool(getattr(ESTIMATORS.get(estimator), "needs_gram", False))


def estimate_influence(sums, estimator: str = "diff-means", **options: Any):
    """The influence of every unit on every target from the farm's ``sums``
    (:class:`~confidently.influence.estimate.InfluenceSums`) by the estimator named ``estimator``, with its
    ``options`` (ridge, lasso: ``penalty``, ``scope``, ``device``). The result's ``details`` name the
    estimator and the regularisation it chose, for the estimate's metadata."""
    fit = ESTIMATORS.get(estimator)
    if getattr(fit, "needs_gram", False) and sums.gram is None:
        raise UsageError(f"the {estimator} estimator fits from per-fold Gram sums, which these sums lack: make them "
                         "with folds (InfluenceSums.empty(..., folds=5); partial estimates: `influence estimate "
                         f"--estimator {estimator} --partial-out`)")
    return fit(sums, **options)
