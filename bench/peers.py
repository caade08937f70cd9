"""The peers the benchmarks compare with, built the same way everywhere (not a test)."""

from __future__ import annotations

import torch


def art_smoothed_vit(model, arch: str, size: int, classes: int, ablation_size: int, device: torch.device | str = "cpu"):
    """ART's smoothed ViT (column ablations, salman2021) with ``model``'s weights; None without ART
    (``pip install -e '.[bench]'``)."""
    try:
        from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing
    except ImportError:
        return None
    art = PyTorchDeRandomizedSmoothing(model=arch, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, size, size),
                                       nb_classes=classes, ablation_size=ablation_size, algorithm="salman2021",
                                       ablation_type="column", replace_last_layer=True, load_pretrained=False,
                                       device_type="gpu" if torch.device(device).type == "cuda" else "cpu",
                                       verbose=False)
    art.model.load_state_dict(model.net.state_dict(), strict=False)
    # ART 1.20's ViT.forward_features predates timm 1.0's attn_mask/is_causal arguments, which timm's forward
    # passes on; route its forward around them so the peer runs at all.
    art.model.forward = lambda x: art.model.forward_head(art.model.forward_features(x))
    return art
