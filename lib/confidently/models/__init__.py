"""Models: one registry for tiny CPU archs and every timm name, normalisation inside the
model, safetensors model files, and token dropping for vision transformers."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "tiny": "confidently.models",
    "Classifier": "confidently.models.classifier",
    "Normalize": "confidently.models.classifier",
    "load_model": "confidently.models.files",
    "save_model": "confidently.models.files",
    "arch_defaults": "confidently.models.registry",
    "count_parameters": "confidently.models.registry",
    "create_model": "confidently.models.registry",
    "list_archs": "confidently.models.registry",
    "register_arch": "confidently.models.registry",
    "supports_token_drop": "confidently.models.token_drop",
    "token_keep_mask": "confidently.models.token_drop",
    "vit_forward_kept": "confidently.models.token_drop",
    "vit_forward_masked": "confidently.models.token_drop",
    "vit_patch_size": "confidently.models.token_drop",
})
