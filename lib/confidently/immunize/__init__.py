"""PhotoGuard-style immunization against latent-diffusion editing (thesis ch. 4; spec/immunize.md).

- :mod:`.models`: local diffusers LDM directories (``load_ldm``) and the tiny random model
  (``write_tiny_model``); the VAE downsampling factor and the mode come from the configs.
- :mod:`.text`: prompt conditioning — precomputed embeddings, CLIP (transformers), ``HashTextEncoder``.
- :mod:`.editing`: the one differentiable editing loop (inpaint / img2img, CFG, DDIM eta, CPU-drawn
  noise, per-step gradient checkpointing), used by ``edit`` and by the diffusion attack.
- :mod:`.attacks`: the PGD front door ``immunize`` with methods ``encoder``, ``diffusion``, ``random``
  and norms ``linf``, ``l2`` registered by name; presets.
- :mod:`.pixels`: centre-crop/resize, and 8-bit saving re-projected onto the ε-ball.
- :mod:`.inputs`: what a record brings (photo, immunized copies, mask, conditioning, seed), fitted.
- :mod:`.metrics`, :mod:`.transforms`: scoring the edits (``immunize score``).

Immunization is a protection against the model it was computed with, not a guarantee.
"""

from confidently.immunize.attacks import (
    METHODS,
    NORMS,
    PRESETS,
    EncoderAttack,
    Immunized,
    PGDConfig,
    PGDResult,
    Request,
    immunize,
    parse_fraction,
    pgd,
    target_image,
)
from confidently.immunize.editing import (
    EditConfig,
    EditNoise,
    binarize_mask,
    edit_forward,
    edit_image,
    paste_back,
    resolve_mode,
)
from confidently.immunize.models import (
    LatentDiffusion,
    configured_mode,
    load_ldm,
    model_fingerprint,
    tiny_components,
    write_tiny_model,
)
from confidently.immunize.pixels import (
    check_output_format,
    fit_image,
    quantize_within_bound,
    save_uint8,
)
from confidently.immunize.text import (
    ClipText,
    Conditioning,
    HashTextEncoder,
    conditioning,
    load_prompt_embeds,
    load_text_encoder,
)

__all__ = [
    "METHODS", "NORMS", "PRESETS", "ClipText", "Conditioning", "EditConfig", "EditNoise", "EncoderAttack",
    "HashTextEncoder", "Immunized", "LatentDiffusion", "PGDConfig", "PGDResult", "Request", "binarize_mask",
    "check_output_format", "conditioning", "configured_mode", "edit_forward", "edit_image", "fit_image", "immunize",
    "load_ldm", "load_prompt_embeds", "load_text_encoder", "model_fingerprint", "paste_back", "parse_fraction", "pgd",
    "quantize_within_bound", "resolve_mode", "save_uint8", "target_image", "tiny_components", "write_tiny_model",
]
