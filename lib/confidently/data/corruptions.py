"""The ImageNet-C corruptions (Hendrycks & Dietterich, 2019) at five severities, behind one registry.

``corrupt(images, name, severity, generator, seeds=...)`` works on float N×C×H×W in [0, 1]; severity 0 is
the identity. The reference is the ``imagecorruptions`` package (the 15 ImageNet-C corruptions and its 4
extra ones, ImageNet severity tables), run image by image; a few are batched torch ops instead, each
tested to match the reference within 1 % and differentiable (in-loop patch training needs that).
Randomness is seeded per image, so an image's corruption depends on its own seed, never on its batch.
"""

from __future__ import annotations

import contextlib
import functools
import io
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from confidently.data.corruption_names import IMAGENET_C, SEVERITIES
from confidently.registry import Registry

CorruptionFn = Callable[[torch.Tensor, int, Sequence[int]], torch.Tensor]
CORRUPTIONS: Registry[CorruptionFn] = Registry("corruption", ValueError)
register_corruption = CORRUPTIONS.register
list_corruptions = CORRUPTIONS.names


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None,
            seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (0–5) to a batch; the result stays in [0, 1].

    ``seeds`` (one int per image, e.g. derived from (seed, record id)) fixes each image's randomness;
    without them one seed per image is drawn from ``generator`` (seed 0 when absent)."""
    apply = CORRUPTIONS.get(name)
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0..5, not {severity}")
    if severity == 0:
        return images
    squeeze = images.ndim == 3
    batch = images.unsqueeze(0) if squeeze else images
    if seeds is None:
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        seeds = torch.randint(0, 2**31 - 1, (len(batch),), generator=generator).tolist()
    elif len(seeds) != len(batch):
        raise ValueError(f"{len(seeds)} seeds for {len(batch)} images")
    out = apply(batch, severity, [int(s) for s in seeds]).clamp(0, 1)
    return out[0] if squeeze else out


_NUMPY_STATE = threading.Lock()


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """NumPy's global random state seeded by ``seed`` (where imagecorruptions draws), restored afterwards."""
    with _NUMPY_STATE:
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            yield
        finally:
            np.random.set_state(state)


def reference_corrupt(images: torch.Tensor, severity: int, seeds: Sequence[int], *, name: str) -> torch.Tensor:
    """``imagecorruptions``' ``name`` on each image, 8-bit in and out as ImageNet-C.

    The package draws from NumPy's global random state, so each image runs with it seeded by its own
    seed; glass_blur and impulse_noise take the seed directly. The package's
    front door refuses images under 32 px, so this calls the corruption function itself; grey images are
    corrupted as grey RGB and averaged back to one channel."""
    from imagecorruptions import corruption_dict
    from PIL import Image

    function = corruption_dict[name]
    arrays = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array, seed in zip(arrays, seeds, strict=True):
        rgb = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
        extra = {"seed": seed} if name in ("glass_blur", "impulse_noise") else {}
        with _numpy_seeded(seed):
            result = np.uint8(function(Image.fromarray(rgb), severity, **extra))
        result = torch.from_numpy(np.array(result)).permute(2, 0, 1).float().div(255.0)
        out.append(result.mean(0, keepdim=True) if array.shape[-1] == 1 else result)
    return torch.stack(out).to(images.device, images.dtype)


def gaussian_noise(images: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    sigma = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    noise = torch.stack([torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    return images + sigma * noise.to(images.device, images.dtype)


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(xs**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur_sigma(images: torch.Tensor, sigma: float, truncate: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur: radius ⌈3σ⌉ with reflect padding, or with ``truncate`` as scipy's
    ``gaussian_filter(mode='nearest')`` (radius ⌊truncate·σ + ½⌋, edge pixels repeated), which
    scikit-image's ``gaussian`` and so ImageNet-C use."""
    radius = max(1, int(np.ceil(3 * sigma))) if truncate is None else max(1, int(truncate * sigma + 0.5))
    kernel = _gaussian_kernel(sigma, radius).to(images.device, images.dtype)
    channels = images.shape[1]

    def mode(side: int) -> str:
        return "reflect" if truncate is None and side > radius else "replicate"

    out = F.pad(images, (radius, radius, 0, 0), mode=mode(images.shape[-1]))
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode=mode(images.shape[-2]))
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def gaussian_blur(images: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    return gaussian_blur_sigma(images, (1, 2, 3, 4, 6)[severity - 1], truncate=4.0)


def contrast(images: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Pull each channel toward its own mean (one mean over all channels would tint a red image pink)."""
    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def brightness(images: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Raise the HSV value channel by c, keeping hue and saturation: scaling RGB by V'/V does exactly that."""
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    value = images.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(max=1.0)
    scale = torch.where(value > 0, new_value / value.clamp_min(1e-6), torch.zeros_like(value))
    flat = value <= 0
    return torch.where(flat, new_value.expand_as(images), images * scale)


def fog(images: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """ImageNet-C's fog with the reference's own plasma fractal, drawn as it would draw it for each seed."""
    from imagecorruptions.corruptions import next_power_of_2, plasma_fractal

    strength, decay = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[severity - 1]
    height, width = images.shape[-2:]
    size = next_power_of_2(max(images.shape[1:]))
    layers = []
    for seed in seeds:
        with _numpy_seeded(seed):
            layers.append(torch.from_numpy(plasma_fractal(mapsize=size, wibbledecay=decay)[:height, :width].copy()))
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    fogged = images + strength * torch.stack(layers)[:, None].to(images.device, images.dtype)
    return fogged * peak / (peak + strength)


_BATCHED = {"gaussian_noise": gaussian_noise, "gaussian_blur": gaussian_blur, "contrast": contrast,
            "brightness": brightness, "fog": fog}
for _name in IMAGENET_C:
    register_corruption(_name)(_BATCHED.get(_name) or functools.partial(reference_corrupt, name=_name))


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
