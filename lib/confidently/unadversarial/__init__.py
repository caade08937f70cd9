"""Unadversarial examples (thesis ch. 3): patches a fixed model recognises easily."""

from confidently.unadversarial.patches import Placement, composite, init_patches, patch_side
from confidently.unadversarial.train import PatchConfig, best_images, evaluate_arms, train_patches

__all__ = ["PatchConfig", "Placement", "best_images", "composite", "evaluate_arms", "init_patches", "patch_side",
           "train_patches"]
