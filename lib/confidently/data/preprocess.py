"""Per-image preprocessing in the data loader's workers, registered by name.

Each preprocess takes one stored image (uint8, or float32 in [0, 1], C×H×W) and returns the
model's input size in the same dtype, so uint8 photos cross process boundaries as uint8 and
become float on the device. Random ones draw only from the generator they are handed, which the
loader seeds by (seed, record id, epoch): augmentation does not depend on workers, batch size or
shards.

``eval`` is timm's evaluation transform (resize the shorter side to ``size / crop_pct``, centre
crop); ``train`` is ``RandomResizedCrop`` + flip; ``robustness-imagenet`` adds the robustness
library's ImageNet colour jitter and PCA lighting noise (the thesis's adversarial training);
``shift-flip`` is the CIFAR recipe (translate by up to ``shift`` pixels, mirror half); ``deit`` the
DeiT recipe for ViTs (crop, flip, RandAugment, random erasing).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.registry import Registry

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _functional():
    """torchvision's v2 functional transforms, imported when first used (``dataset info`` never needs them)."""
    from torchvision.transforms.v2 import functional

    return functional


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return InterpolationMode(name)


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input: size (H, W), resize interpolation and centre-crop fraction."""

    size: tuple[int, int]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"unknown interpolation {self.interpolation!r}; choose {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_pct <= 1:
            raise UsageError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @classmethod
    def of(cls, model: Any, **overrides: Any) -> DataConfig:
        """A :class:`~confidently.models.classifier.Classifier`'s data config: its input size, with
        interpolation and crop_pct from its architecture (timm's pretrained config for timm names)."""
        from confidently.models.registry import arch_defaults

        defaults = arch_defaults(model.arch)
        values = {"size": tuple(model.input_size[-2:]), "interpolation": defaults.get("interpolation", "bilinear"),
                  "crop_pct": defaults.get("crop_pct", 1.0)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Preprocess(ABC):
    """One image in, the model's input out (same dtype); ``random`` ones use the generator given."""

    random = False

    def __init__(self, config: DataConfig):
        self.config = config

    @abstractmethod
    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @property
    def mode(self):
        """The config's interpolation as torchvision's ``InterpolationMode``."""
        return _interpolation(self.config.interpolation)


PREPROCESS: Registry[type[Preprocess]] = Registry("preprocess")


def make_preprocess(name: str, config: DataConfig, **options: Any) -> Preprocess:
    """The preprocess ``name`` for ``config``; ``options`` are its own (``shift``/``flip`` for shift-flip)."""
    return PREPROCESS.get(name)(config, **options)


def _resize(image: torch.Tensor, size: list[int], mode) -> torch.Tensor:
    if list(image.shape[-2:]) == list(size):
        return image
    out = _functional().resize(image, size, interpolation=mode, antialias=True)
    return out.clamp_(0, 1) if out.is_floating_point() else out


@PREPROCESS.register("eval")
class CenterCrop(Preprocess):
    """Resize the shorter side to ``size / crop_pct`` (aspect kept), then crop the centre to ``size``."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        height, width = self.config.size
        if height == width:
            scale = math.floor(height / self.config.crop_pct)
            short, long = sorted(image.shape[-2:])
            target = [scale, max(scale, round(scale * long / short))]
            target = target if image.shape[-2] <= image.shape[-1] else target[::-1]
        else:
            target = [math.floor(height / self.config.crop_pct), math.floor(width / self.config.crop_pct)]
        return _functional().center_crop(_resize(image, target, self.mode), [height, width])


@PREPROCESS.register("squash")
class Squash(Preprocess):
    """Resize straight to ``size``, aspect ratio not kept (for data already framed as the model wants)."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return _resize(image, list(self.config.size), self.mode)


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


@PREPROCESS.register("train")
class RandomResizedCrop(Preprocess):
    """torchvision's ``RandomResizedCrop`` (scale 0.08–1, aspect 3/4–4/3) and a horizontal flip, seeded."""

    random = True
    scale = (0.08, 1.0)
    ratio = (3 / 4, 4 / 3)

    def crop_box(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, *log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                return top, left, h, w
        aspect = width / height  # fallback: the largest centred crop within the ratio bounds
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        top, left, h, w = self.crop_box(image.shape[-2], image.shape[-1], generator)
        out = _functional().resized_crop(image, top, left, h, w, list(self.config.size), interpolation=self.mode,
                                         antialias=True)
        out = out.clamp_(0, 1) if out.is_floating_point() else out
        return _functional().horizontal_flip(out) if float(torch.rand((), generator=generator)) < 0.5 else out


# The robustness library's ImageNet PCA lighting constants (AlexNet's eigen-decomposition of RGB).
IMAGENET_PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                    [-0.5808, -0.0045, -0.8140],
                                    [-0.5836, -0.6948, 0.4203]])


@PREPROCESS.register("robustness-imagenet")
class RobustnessImageNet(RandomResizedCrop):
    """The robustness library's ImageNet training transform: crop and flip, ``ColorJitter(0.1, 0.1, 0.1)``
    in a random order, then PCA lighting noise with std 0.05. Returns float32 in [0, 1]."""

    jitter = 0.1
    lighting = 0.05

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = super().__call__(image, generator)
        out = out.float().div(255.0) if out.dtype == torch.uint8 else out.float()
        adjust = [_functional().adjust_brightness, _functional().adjust_contrast, _functional().adjust_saturation]
        factors = [_uniform(generator, 1 - self.jitter, 1 + self.jitter) for _ in adjust]
        if out.shape[0] == 1:
            adjust, factors = adjust[:2], factors[:2]  # saturation needs colour
        for i in torch.randperm(len(adjust), generator=generator).tolist():
            out = adjust[i](out, factors[i])
        if out.shape[0] == 3:
            alpha = torch.randn(3, generator=generator) * self.lighting
            out = out + (IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL)).view(3, 1, 1)
        return out.clamp_(0, 1)


@PREPROCESS.register("shift-flip")
class ShiftFlip(Preprocess):
    """The CIFAR training augmentation: the image brought to ``size`` (shorter side, centre crop, no margin),
    translated by up to ``shift`` pixels each way (zero padding) and, with ``flip``, mirrored half the time."""

    def __init__(self, config: DataConfig, shift: int = 4, flip: bool = True):
        super().__init__(config)
        self.fit = CenterCrop(replace(config, crop_pct=1.0))
        self.shift, self.flip = shift, flip
        self.random = shift > 0 or flip

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.fit(image)
        if self.shift > 0:
            height, width = out.shape[-2:]
            dy, dx = torch.randint(0, 2 * self.shift + 1, (2,), generator=generator).tolist()
            padded = torch.nn.functional.pad(out, (self.shift,) * 4)
            out = padded[:, dy:dy + height, dx:dx + width]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            out = out.flip(-1)
        return out.contiguous()


@PREPROCESS.register("deit")
class DeiT(RandomResizedCrop):
    """DeiT's training augmentation for ViTs: the crop (bicubic) and flip, ``RandAugment(2, 9)`` and
    ``RandomErasing(p=0.25)`` (per-image; DeiT's batch-level mixup and cutmix are not included).
    RandAugment's rotations and shears resample bilinearly: torchvision's tensor kernels have no bicubic.
    torchvision's RandAugment draws from the global generator, so it runs under a forked one seeded
    from this image's generator: the same record and epoch give the same image anywhere."""

    erase_p = 0.25

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        from torchvision.transforms import v2

        out = super().__call__(image, generator)
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = v2.RandAugment(num_ops=2, magnitude=9, interpolation=_interpolation("bilinear"))(out)
            if out.dtype == torch.uint8:
                out = out.float().div(255.0)
            return v2.RandomErasing(p=self.erase_p, value=0.0)(out).clamp_(0, 1)
