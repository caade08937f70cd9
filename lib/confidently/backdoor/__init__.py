"""Planting a bias in source data and measuring whether it survives transfer (thesis ch. 7).

Triggers themselves are data transforms (:mod:`confidently.data.triggers`); training and
transfer go through :mod:`confidently.training` and :mod:`confidently.transfer`.
"""

from confidently.backdoor.metrics import (
    bias_from_tallies,
    bias_metrics,
    bias_tallies,
    group_from_tallies,
    group_gaps,
    group_tallies,
    triggered_predictions,
)
from confidently.backdoor.poison import PoisonPlan, parse_classes, select_poison

__all__ = ["PoisonPlan", "bias_from_tallies", "bias_metrics", "bias_tallies", "group_from_tallies", "group_gaps",
           "group_tallies", "parse_classes", "select_poison", "triggered_predictions"]
