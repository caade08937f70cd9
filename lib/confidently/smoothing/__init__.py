"""Derandomized smoothing against adversarial patches (thesis ch. 1; Levine & Feizi 2020).

``kinds``: ablation kinds registered by name (free of torch, for ``--help``); ``ablation``: the method's core
(ablation sets, Δ exact and in closed form, votes with token dropping, the certificate, training on ablations,
the patch attack); ``certify``: certificates for a stream of records (:class:`Certifier`, :class:`Certificates`);
``votes``: the votes file; ``soundness``: real patches against certified images.
"""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "ABLATION_PARTS": "confidently.smoothing.kinds",
    "BAND_PRESETS": "confidently.smoothing.ablation",
    "SUMMARY_KEYS": "confidently.smoothing.ablation",
    "Ablation": "confidently.smoothing.ablation",
    "AblationTraining": "confidently.smoothing.ablation",
    "ablation_votes": "confidently.smoothing.ablation",
    "certify_counts": "confidently.smoothing.ablation",
    "default_ablation_size": "confidently.smoothing.ablation",
    "list_ablations": "confidently.smoothing.kinds",
    "max_certified_patch": "confidently.smoothing.ablation",
    "patch_attack": "confidently.smoothing.ablation",
    "patch_contents": "confidently.smoothing.ablation",
    "patch_side_for_fraction": "confidently.smoothing.ablation",
    "register_ablation": "confidently.smoothing.kinds",
    "smoothed_prediction": "confidently.smoothing.ablation",
    "summarize_certificates": "confidently.smoothing.ablation",
    "vote_counts": "confidently.smoothing.ablation",
    "Certificates": "confidently.smoothing.certify",
    "Certifier": "confidently.smoothing.certify",
    "model_geometry": "confidently.smoothing.certify",
    "resolve_drop": "confidently.smoothing.certify",
    "check_soundness": "confidently.smoothing.soundness",
    "load_votes": "confidently.smoothing.votes",
    "save_votes": "confidently.smoothing.votes",
})
