"""Planting a bias in source data and measuring whether it survives transfer (thesis ch. 7).

Triggers themselves are data transforms (:mod:`confidently.data.triggers`); training and
transfer go through :mod:`confidently.training` and :mod:`confidently.transfer`.
"""

from confidently.backdoor.attributes import draw_cells, field_value, group_attribute, parse_cell
from confidently.backdoor.manifests import PoisonedManifest, poison_manifest, stamp_manifest, write_materialized
from confidently.backdoor.metrics import (
    bias_from_tallies,
    bias_metrics,
    bias_tallies,
    group_from_tallies,
    group_gaps,
    group_tallies,
    merge_bias_shards,
    overlay_skew,
    prediction_skew,
    trigger_bias,
    triggered_predictions,
)
from confidently.backdoor.poison import SELECTION_SEED, PoisonPlan, fraction_of_rows, parse_classes, select_poison
from confidently.backdoor.trigger_spec import build_trigger_spec, check_trigger_fits, save_trigger

__all__ = ["SELECTION_SEED", "PoisonPlan", "PoisonedManifest", "bias_from_tallies", "bias_metrics", "bias_tallies",
           "build_trigger_spec", "check_trigger_fits", "draw_cells", "field_value", "fraction_of_rows",
           "group_attribute", "group_from_tallies", "group_gaps", "group_tallies", "merge_bias_shards",
           "overlay_skew", "parse_cell", "parse_classes", "poison_manifest", "prediction_skew", "save_trigger",
           "select_poison", "stamp_manifest", "trigger_bias", "triggered_predictions", "write_materialized"]
