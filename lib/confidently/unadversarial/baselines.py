"""Baseline patches that are not optimised against the model (thesis §3.2): QR codes of the class index.

(``best_images``, the thesis's main baseline, needs the model and lives with the training code.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from confidently.errors import MissingBackend


def qr_matrix(text: str, border: int = 1) -> torch.Tensor:
    """The modules of the smallest QR code (error correction H) holding ``text``, 1 = dark, with a quiet
    zone of ``border`` modules (readers want 4; a sticker this small keeps 1)."""
    try:
        import qrcode
    except ImportError:
        raise MissingBackend("the qr baseline needs the `qrcode` package: pip install 'confidently[qr]'") from None
    code = qrcode.QRCode(version=None, error_correction=qrcode.constants.ERROR_CORRECT_H, box_size=1, border=border)
    code.add_data(text)
    code.make(fit=True)
    return torch.tensor(code.get_matrix(), dtype=torch.float32)


def qr_patches(num_classes: int, side: int, channels: int = 3, border: int = 1) -> torch.Tensor:
    """K×C×p×p in {0, 1}: the QR code of each class index (dark modules black, light ones white),
    resampled to p×p by nearest neighbour so modules stay crisp (a code of 21 + 2·border modules needs
    p ≥ 21 + 2·border pixels to keep every module; smaller patches drop some)."""
    patches = []
    for index in range(num_classes):
        light = 1 - qr_matrix(str(index), border)
        patches.append(F.interpolate(light[None, None], size=(side, side), mode="nearest-exact")[0])
    return torch.stack(patches).expand(-1, channels, -1, -1).contiguous()
