"""Loading Mitsuba 3 for every user of it (the texture renderer and render-3db's engine): a leaf module."""

from __future__ import annotations

import torch

from confidently.errors import MissingBackend
from confidently.render.llvm import point_drjit_at_llvm, require_llvm


def load_mitsuba(device: str | torch.device = "cpu"):
    """Mitsuba with a differentiable variant: ``cuda_ad_rgb`` for CUDA devices, ``llvm_ad_rgb`` on the CPU.

    Every user of Mitsuba comes through here, so Dr.Jit is pointed at LLVM 19 before its first import and an
    older LLVM is refused before a kernel can abort the process (see :mod:`confidently.render.llvm`).
    """
    point_drjit_at_llvm()
    try:
        import drjit as dr
        import mitsuba as mi
    except ImportError:
        raise MissingBackend("texture rendering needs Mitsuba 3: pip install 'confidently[render]'") from None
    variant = "cuda_ad_rgb" if str(device).startswith("cuda") else "llvm_ad_rgb"
    if variant == "llvm_ad_rgb":
        require_llvm(dr.detail.llvm_version()[0])
    try:
        mi.set_variant(variant)
    except Exception as exc:  # drjit raises ImportError/RuntimeError subclasses depending on what is missing
        raise MissingBackend(f"Mitsuba cannot load its {variant} variant: {exc}") from None
    return mi, dr
