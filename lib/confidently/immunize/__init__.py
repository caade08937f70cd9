"""PhotoGuard-style immunization against latent-diffusion editing (thesis ch. 4; spec/immunize.md).

- :mod:`.models`: local diffusers LDM directories (``load_ldm``) and the tiny random model
  (``write_tiny_model``); the VAE downsampling factor and the mode come from the configs.
- :mod:`.text`: prompt conditioning — precomputed embeddings, CLIP (transformers), ``HashTextEncoder``.
- :mod:`.editing`: the one differentiable editing loop (inpaint / img2img, CFG, DDIM eta, CPU-drawn
  noise, per-step gradient checkpointing), used by ``edit`` and by the diffusion attack.
- :mod:`.attacks`: the PGD front door ``immunize`` with methods ``encoder``, ``diffusion``, ``random``
  and norms ``linf``, ``l2`` registered by name.
- :mod:`.presets`: the PGD presets and ``parse_fraction`` (no torch: the CLI's help lists the presets).
- :mod:`.pixels`: centre-crop/resize, and 8-bit saving re-projected onto the ε-ball.
- :mod:`.inputs`: what a record brings (photo, immunized copies, mask, conditioning, seed), fitted.
- :mod:`.metrics`, :mod:`.transforms`: scoring the edits (``immunize score``).

Immunization is a protection against the model it was computed with, not a guarantee.
"""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "METHODS": "confidently.immunize.attacks",
    "NORMS": "confidently.immunize.attacks",
    "EncoderAttack": "confidently.immunize.attacks",
    "Immunized": "confidently.immunize.attacks",
    "PGDConfig": "confidently.immunize.attacks",
    "PGDResult": "confidently.immunize.attacks",
    "Request": "confidently.immunize.attacks",
    "batchable": "confidently.immunize.attacks",
    "immunize": "confidently.immunize.attacks",
    "immunize_batch": "confidently.immunize.attacks",
    "pgd": "confidently.immunize.attacks",
    "target_image": "confidently.immunize.attacks",
    "EditConfig": "confidently.immunize.editing",
    "EditNoise": "confidently.immunize.editing",
    "binarize_mask": "confidently.immunize.editing",
    "edit_forward": "confidently.immunize.editing",
    "edit_image": "confidently.immunize.editing",
    "paste_back": "confidently.immunize.editing",
    "resolve_mode": "confidently.immunize.editing",
    "LatentDiffusion": "confidently.immunize.models",
    "configured_mode": "confidently.immunize.models",
    "load_ldm": "confidently.immunize.models",
    "model_fingerprint": "confidently.immunize.models",
    "tiny_components": "confidently.immunize.models",
    "write_tiny_model": "confidently.immunize.models",
    "PRESETS": "confidently.immunize.presets",
    "parse_fraction": "confidently.immunize.presets",
    "check_output_format": "confidently.immunize.pixels",
    "fit_image": "confidently.immunize.pixels",
    "quantize_within_bound": "confidently.immunize.pixels",
    "save_uint8": "confidently.immunize.pixels",
    "ClipText": "confidently.immunize.text",
    "Conditioning": "confidently.immunize.text",
    "HashTextEncoder": "confidently.immunize.text",
    "conditioning": "confidently.immunize.text",
    "load_prompt_embeds": "confidently.immunize.text",
    "load_text_encoder": "confidently.immunize.text",
})
