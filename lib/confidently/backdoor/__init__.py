"""Planting a bias in source data and measuring whether it survives transfer (thesis ch. 7).

Triggers themselves are data transforms (:mod:`confidently.data.triggers`); training and
transfer go through :mod:`confidently.training` and :mod:`confidently.transfer`.
"""

from confidently.backdoor.metrics import bias_metrics, group_gaps
from confidently.backdoor.poison import PoisonPlan, parse_classes, select_poison

__all__ = ["PoisonPlan", "bias_metrics", "group_gaps", "parse_classes", "select_poison"]
