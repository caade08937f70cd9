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
    MAX_BACKGROUNDS,
    PatchConfig,
    background_images,
    best_images,
    check_labels,
    conflict_classes,
    corrupt_with_gradient,
    eval_batches,
    evaluate_arms,
    random_corruptions,
    random_image_picks,
    random_images,
    seeded_sample,
    train_patches,
    training_batches,
)

__all__ = ["BACKGROUNDS", "GRADIENTS", "ImageBackgrounds", "TextureConfig", "evaluate_textures", "load_texture",
           "render_batch", "save_texture", "train_texture",
           "MAX_BACKGROUNDS", "WARPS", "PatchConfig", "Placement", "background_images", "best_images",
           "check_labels", "composite", "conflict_classes", "corrupt_with_gradient", "eval_batches", "evaluate_arms",
           "init_patches", "load_patch_file", "patch_side", "qr_matrix", "qr_patches", "random_corruptions",
           "random_image_picks", "random_images", "seeded_sample", "train_patches", "training_batches"]
