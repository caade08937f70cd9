"""Planting a bias in source data and measuring whether it survives transfer (thesis ch. 7).

Triggers themselves are data transforms (:mod:`confidently.data.triggers`); training and
transfer go through :mod:`confidently.training` and :mod:`confidently.transfer`.
"""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "draw_cells": "confidently.backdoor.attributes",
    "field_value": "confidently.backdoor.attributes",
    "group_attribute": "confidently.backdoor.attributes",
    "parse_cell": "confidently.backdoor.attributes",
    "PoisonedManifest": "confidently.backdoor.manifests",
    "poison_manifest": "confidently.backdoor.manifests",
    "stamp_manifest": "confidently.backdoor.manifests",
    "write_materialized": "confidently.backdoor.manifests",
    "bias_from_tallies": "confidently.backdoor.metrics",
    "bias_metrics": "confidently.backdoor.metrics",
    "bias_tallies": "confidently.backdoor.metrics",
    "group_from_tallies": "confidently.backdoor.metrics",
    "group_gaps": "confidently.backdoor.metrics",
    "group_tallies": "confidently.backdoor.metrics",
    "merge_bias_shards": "confidently.backdoor.metrics",
    "overlay_skew": "confidently.backdoor.metrics",
    "prediction_skew": "confidently.backdoor.metrics",
    "trigger_bias": "confidently.backdoor.metrics",
    "triggered_predictions": "confidently.backdoor.metrics",
    "SELECTION_SEED": "confidently.backdoor.poison",
    "PoisonPlan": "confidently.backdoor.poison",
    "fraction_of_rows": "confidently.backdoor.poison",
    "parse_classes": "confidently.backdoor.poison",
    "select_poison": "confidently.backdoor.poison",
    "build_trigger_spec": "confidently.backdoor.trigger_spec",
    "check_trigger_fits": "confidently.backdoor.trigger_spec",
    "save_trigger": "confidently.backdoor.trigger_spec",
})
