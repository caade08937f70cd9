"""``diff-means``: the thesis's estimator (eq. 8.1) — mean output with a unit minus mean output without it."""

from __future__ import annotations

from confidently.influence.estimate import Influence, InfluenceSums, estimate
from confidently.influence.estimators import register_estimator


@register_estimator("diff-means")
def diff_means(sums: InfluenceSums) -> Influence:
    """Difference of means with standard errors, from additive sums (see :func:`estimate`)."""
    return estimate(sums)
