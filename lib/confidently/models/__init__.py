"""Models: one registry for tiny CPU archs and every timm name, normalisation inside the
model, safetensors model files, and token dropping for vision transformers."""

from confidently.models import tiny  # noqa: F401  (registers the tiny archs)
from confidently.models.classifier import Classifier, Normalize
from confidently.models.files import load_model, save_model
from confidently.models.registry import arch_defaults, count_parameters, create_model, list_archs, register_arch
from confidently.models.token_drop import (
    supports_token_drop,
    token_keep_mask,
    vit_forward_kept,
    vit_forward_masked,
    vit_patch_size,
)

__all__ = [
    "Classifier", "Normalize", "arch_defaults", "count_parameters", "create_model", "list_archs", "load_model",
    "register_arch", "save_model", "supports_token_drop", "token_keep_mask", "vit_forward_kept",
    "vit_forward_masked", "vit_patch_size",
]
