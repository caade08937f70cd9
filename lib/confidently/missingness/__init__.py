"""Feature removal without missingness bias (thesis ch. 5): units, fills, orders, curves, LIME,
consistency, the top-k test and missingness augmentation."""

from confidently.missingness.augment import MissingnessTraining
from confidently.missingness.consistency import expected_random_jaccard, pairwise_jaccard, topk_jaccard
from confidently.missingness.curve import Curves, curve_auc, curve_ks, missingness_curves
from confidently.missingness.features import (
    Features,
    from_label_map,
    grid_labels,
    list_units,
    make_features,
    register_unit,
    removal_flags,
    visible_after_removal,
)
from confidently.missingness.fills import BINARY8, FILL_NAMES, Fill, color_fills, drop_over, make_fill
from confidently.missingness.inputs import Inputs, Orders, RowsById, Segments, fill_seeds, padded
from confidently.missingness.lime import (
    Explanation,
    LimeConfig,
    explain,
    kernel_weights,
    list_backends,
    perturbations,
    register_backend,
    weighted_ridge,
)
from confidently.missingness.model import PARTIAL_RULES, MissingnessModel
from confidently.missingness.orders import (
    feature_scores,
    list_orders,
    needs_scores,
    register_order,
    removal_order,
    saliency_maps,
)
from confidently.missingness.summary import class_entropy, summarize_consistency, summarize_curves, summarize_topk

__all__ = [
    "BINARY8", "Curves", "Explanation", "FILL_NAMES", "Features", "Fill", "Inputs", "LimeConfig", "MissingnessModel",
    "MissingnessTraining", "Orders", "PARTIAL_RULES", "RowsById", "Segments", "class_entropy", "color_fills",
    "curve_auc", "curve_ks", "drop_over", "expected_random_jaccard", "explain", "feature_scores", "fill_seeds",
    "from_label_map", "grid_labels", "kernel_weights", "list_backends", "list_orders", "list_units", "make_features",
    "make_fill", "missingness_curves", "needs_scores", "padded", "pairwise_jaccard", "perturbations",
    "register_backend", "register_order", "register_unit", "removal_flags", "removal_order", "saliency_maps",
    "summarize_consistency", "summarize_curves", "summarize_topk", "topk_jaccard", "visible_after_removal",
    "weighted_ridge",
]
