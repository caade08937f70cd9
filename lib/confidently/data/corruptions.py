"""One shared set of image corruptions with five severities (ImageNet-C / CIFAR-10-C style).

``corrupt(images, name, severity, generator)`` works on float N×C×H×W in [0, 1]; severity 0
is the identity. Severity tables follow CIFAR-10-C (Hendrycks & Dietterich, 2019); a new
corruption is one registered function.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from confidently.registry import Registry

CorruptionFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]
CORRUPTIONS: Registry[CorruptionFn] = Registry("corruption", ValueError)
register_corruption = CORRUPTIONS.register
list_corruptions = CORRUPTIONS.names
SEVERITIES = (1, 2, 3, 4, 5)


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (0–5) to a batch; the result stays in [0, 1]."""
    apply = CORRUPTIONS.get(name)
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..5, not {severity}")
    if severity == 0:
        return images
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    squeeze = images.ndim == 3
    batch = images.unsqueeze(0) if squeeze else images
    out = apply(batch, severity, generator).clamp(0, 1)
    return out[0] if squeeze else out


def _noise_like(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(images.shape, generator=generator).to(images.device, images.dtype)


@register_corruption("gaussian_noise")
def gaussian_noise(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return images + sigma * _noise_like(images, generator)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(xs**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur_sigma(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding."""
    kernel = _gaussian_kernel(sigma).to(images.device, images.dtype)
    channels, radius = images.shape[1], kernel.numel() // 2
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect" if images.shape[-1] > radius else "replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect" if images.shape[-2] > radius else "replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


@register_corruption("gaussian_blur")
def gaussian_blur(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return gaussian_blur_sigma(images, (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1])


@register_corruption("contrast")
def contrast(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    factor = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - means) * factor + means


@register_corruption("brightness")
def brightness(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Raise the HSV value channel by c, keeping hue and saturation (CIFAR-10-C's brightness)."""
    shift = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(max=1.0)
    scale = torch.where(value > 0, new_value / value.clamp_min(1e-6), torch.zeros_like(value))
    flat = value <= 0
    return torch.where(flat, new_value.expand_as(images), images * scale)


def plasma_fractal(size: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """A size×size diamond-square fractal in [0, 1] (size a power of two), as ImageNet-C's fog uses."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    grid = np.zeros((size, size), dtype=np.float64)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        wibble /= decay
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(np.roll(corners, -1, 0), -1, 1)
        grid[half:size:step, half:size:step] = square / 4 + rng.uniform(-wibble, wibble, square.shape)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        lt = (corners + np.roll(corners, -1, 0) + centres + np.roll(centres, 1, 1)) / 4
        grid[half:size:step, 0:size:step] = lt + rng.uniform(-wibble, wibble, lt.shape)
        tl = (corners + np.roll(corners, -1, 1) + centres + np.roll(centres, 1, 0)) / 4
        grid[0:size:step, half:size:step] = tl + rng.uniform(-wibble, wibble, tl.shape)
        step = half
    grid -= grid.min()
    return torch.from_numpy(grid / max(grid.max(), 1e-12)).float()


@register_corruption("fog")
def fog(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    strength, decay = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))[severity - 1]
    height, width = images.shape[-2:]
    size = 1 << max(int(np.ceil(np.log2(max(height, width)))), 1)
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    layers = torch.stack([plasma_fractal(size, decay, generator)[:height, :width] for _ in range(images.shape[0])])
    fogged = images + strength * layers[:, None].to(images.device, images.dtype)
    return fogged * peak / (peak + strength)


@register_corruption("jpeg_compression")
def jpeg_compression(images: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return jpeg_roundtrip(images, (80, 65, 58, 50, 40)[severity - 1])


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image of a float N×C×H×W batch in [0, 1] as 8-bit JPEG at ``quality`` and decode it."""
    from PIL import Image

    out = []
    for image in images:
        array = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, format="JPEG",
                                                                                   quality=quality)
        decoded = np.asarray(Image.open(buffer))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().div(255.0))
    return torch.stack(out).to(images.device, images.dtype)
