"""Unadversarial examples (thesis ch. 3): patches a fixed model recognises easily."""

from confidently.unadversarial.baselines import qr_matrix, qr_patches
from confidently.unadversarial.patches import (
    WARPS,
    Placement,
    composite,
    init_patches,
    load_patch_file,
    patch_side,
)
from confidently.unadversarial.texture import (
    BACKGROUNDS,
    GRADIENTS,
    ImageBackgrounds,
    TextureConfig,
    evaluate_textures,
    load_texture,
    render_batch,
    save_texture,
    train_texture,
)
from confidently.unadversarial.train import (
    PatchConfig,
    best_images,
    conflict_classes,
    corrupt_with_gradient,
    evaluate_arms,
    random_corruptions,
    train_patches,
)

__all__ = ["BACKGROUNDS", "GRADIENTS", "ImageBackgrounds", "TextureConfig", "evaluate_textures", "load_texture",
           "render_batch", "save_texture", "train_texture",
           "WARPS", "PatchConfig", "Placement", "best_images", "composite", "conflict_classes",
           "corrupt_with_gradient", "evaluate_arms", "init_patches", "load_patch_file", "patch_side", "qr_matrix",
           "qr_patches", "random_corruptions", "train_patches"]
