"""Baseline patches that are not optimised against the model (thesis §3.2), to compare unadversarial ones
with: the class's easiest or a random training image, noise, or a QR code of the class index.

(``best_images`` and ``random_images`` stream the data through the model and live with the training code.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from confidently.data.dataset import ImageDataset
from confidently.data.source import Source
from confidently.errors import MissingBackend, UsageError
from confidently.models.classifier import Classifier
from confidently.unadversarial.train import best_images, eval_batches, random_image_picks, random_images

BASELINE_KINDS = ("best-image", "random-image", "noise", "qr")


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


def baseline_patches(kind: str, model: Classifier, dataset: Source | None, side: int, *, seed: int = 0,
                     batch_size: int = 64, workers: int | None = None) -> torch.Tensor:
    """K×C×p×p baseline patches in [0, 1] of one of :data:`BASELINE_KINDS`: each class's easiest training image
    (the model's highest confidence in its class; the data streams, one image per class kept), a random one
    (per class the image whose ``derive_seed(seed, id, "random-image")`` is smallest: chosen from the
    records, so only those images are read), noise N(0.5, 0.2²) from ``seed``, or the class index's QR code.
    Every kind but ``qr`` reads ``dataset``."""
    if kind not in BASELINE_KINDS:
        raise UsageError(f"baseline {kind!r}: choose best-image, random-image, noise or qr")
    if dataset is None and kind != "qr":
        raise UsageError(f"baseline {kind} needs `data` (the training images)")
    channels = model.input_size[0]
    if kind == "best-image":
        batches = eval_batches(dataset, model, batch_size, workers=workers, describe="best images")
        return best_images(model, batches, model.num_classes, side)
    if kind == "random-image":
        if not isinstance(dataset, ImageDataset):
            raise UsageError(f"baseline random-image picks records by id and cannot read {dataset.name} in order; "
                             "pack the images with `dataset pack SRC --out DIR --format safetensors` and pass DIR")
        picked = dataset.subset(random_image_picks(dataset.ids, dataset.labels, model.num_classes, seed))
        batches = eval_batches(picked, model, batch_size, workers=workers, describe="random images")
        return random_images(batches, model.num_classes, side, seed)
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (0.5 + 0.2 * torch.randn(model.num_classes, channels, side, side, generator=generator)).clamp(0, 1)
    return qr_patches(model.num_classes, side, channels)
