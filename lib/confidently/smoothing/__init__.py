"""Derandomized smoothing against adversarial patches (thesis ch. 1; Levine & Feizi 2020).

``ablation``: the method's core (ablation sets registered by name, Δ exact and in closed form, votes with
token dropping, the certificate, training on ablations, the patch attack); ``certify``: certificates for a
stream of records (:class:`Certifier`, :class:`Certificates`); ``votes``: the votes file; ``soundness``:
real patches against certified images.
"""

from confidently.smoothing.ablation import (
    ABLATION_PARTS,
    BAND_PRESETS,
    SUMMARY_KEYS,
    Ablation,
    AblationTraining,
    ablation_votes,
    certify_counts,
    default_ablation_size,
    list_ablations,
    max_certified_patch,
    patch_attack,
    patch_contents,
    patch_side_for_fraction,
    register_ablation,
    smoothed_prediction,
    summarize_certificates,
    vote_counts,
)
from confidently.smoothing.certify import Certificates, Certifier, model_geometry, resolve_drop
from confidently.smoothing.soundness import check_soundness
from confidently.smoothing.votes import load_votes, save_votes

__all__ = [
    "ABLATION_PARTS", "BAND_PRESETS", "SUMMARY_KEYS", "Ablation", "AblationTraining", "Certificates", "Certifier",
    "ablation_votes", "certify_counts", "check_soundness", "default_ablation_size", "list_ablations", "load_votes",
    "max_certified_patch", "model_geometry", "patch_attack", "patch_contents", "patch_side_for_fraction",
    "register_ablation", "resolve_drop", "save_votes", "smoothed_prediction", "summarize_certificates",
    "vote_counts",
]
