"""One factory for every architecture: the tiny CPU ones registered here, and any timm name.

``create_model`` returns a :class:`~confidently.models.classifier.Classifier`: the network
with normalisation inside, so callers always feed pixels in [0, 1].
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from confidently.errors import InvalidInput, UsageError
from confidently.models.classifier import Classifier
from confidently.registry import Registry

ArchFactory = Callable[..., nn.Module]
# name → (factory, defaults); the tiny test architectures register themselves in confidently.models.tiny
ARCHS: Registry[tuple[ArchFactory, dict[str, Any]]] = Registry("architecture", builtins=("confidently.models.tiny",))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_arch(name: str, **defaults: Any) -> Callable[[ArchFactory], ArchFactory]:
    """Register ``factory(num_classes, in_chans, img_size, **kwargs) -> nn.Module`` under ``name``.

    ``defaults`` are the input size and normalisation the architecture is meant for.
    """

    def wrap(factory: ArchFactory) -> ArchFactory:
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHS.register(name)((factory, defaults))
        return factory

    return wrap


def list_archs(pattern: str = "*", include_timm: bool = False) -> list[str]:
    """Registered names matching a shell-style pattern; with ``include_timm`` also timm's."""
    names = [n for n in ARCHS.names() if fnmatch.fnmatch(n, pattern)]
    if include_timm:
        import timm

        names += timm.list_models(pattern)
    return names


def _timm_factory(name: str) -> ArchFactory:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown architecture {name!r}: neither a confidently tiny arch "
                         f"({', '.join(ARCHS.names())}) nor a timm model{hint}")

    def build(num_classes: int, in_chans: int, img_size: int | None, pretrained: bool = False, **kwargs):
        if img_size is not None and _takes_img_size(name):
            kwargs.setdefault("img_size", img_size)
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)

    return build


def _takes_img_size(name: str) -> bool:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    family = name.split("_")[0]
    return family in {"vit", "deit", "deit3", "eva", "beit", "swin", "cait", "xcit", "flexivit"} or (
        cfg is not None and getattr(cfg, "fixed_input_size", False))


def arch_defaults(arch: str) -> dict[str, Any]:
    """Default input size, normalisation and eval preprocessing (interpolation, crop_pct) for ``arch``:
    timm's pretrained config for timm names; registered tiny archs do not crop (crop_pct 1)."""
    if arch in ARCHS:
        return {"interpolation": "bilinear", "crop_pct": 1.0, **ARCHS.get(arch)[1]}
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return {"img_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bicubic",
                "crop_pct": 0.875}
    interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic", "nearest") else "bicubic"
    return {"img_size": cfg.input_size[-1], "mean": tuple(cfg.mean), "std": tuple(cfg.std),
            "interpolation": interpolation, "crop_pct": float(cfg.crop_pct or 0.875)}


def create_model(arch: str, num_classes: int, *, in_chans: int = 3, img_size: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 classes: list[str] | None = None, weights: str | os.PathLike | None = None,
                 pretrained: bool = False, **arch_kwargs: Any) -> Classifier:
    """Build ``arch`` (a registered tiny arch or any timm name) wrapped with its normalisation.

    ``weights`` loads a local safetensors state dict into the network (never a pickle);
    ``pretrained=True`` lets timm fetch hub weights and is only for users who ask for it.
    """
    if num_classes < 1:
        raise UsageError(f"num_classes must be >= 1, got {num_classes}")
    defaults = arch_defaults(arch)
    img_size = img_size or defaults.get("img_size")
    mean = tuple(mean or defaults.get("mean", IMAGENET_MEAN))
    std = tuple(std or defaults.get("std", IMAGENET_STD))
    mean, std = (_per_channel(mean, in_chans, "mean"), _per_channel(std, in_chans, "std"))
    factory = ARCHS.get(arch)[0] if arch in ARCHS else _timm_factory(arch)
    kwargs = dict(arch_kwargs)
    if pretrained:
        kwargs["pretrained"] = True
    net = factory(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    if weights is not None:
        load_weights(net, weights)
    return Classifier(net, arch=arch, arch_kwargs=arch_kwargs, num_classes=num_classes,
                      input_size=(in_chans, img_size, img_size), mean=mean, std=std, classes=classes)


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> tuple[float, ...]:
    if len(set(values)) == 1:  # one value for every channel
        return values[:1] * channels
    if len(values) != channels:
        raise UsageError(f"{name} has {len(values)} values for a {channels}-channel input")
    return values


def load_weights(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a bare safetensors state dict into ``net`` (never a pickle); every tensor must fit."""
    from confidently.io.artifacts import load_artifact

    state, _ = load_artifact(path)
    own = net.state_dict()
    wrong = [f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in state.items()
             if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        raise InvalidInput(f"weights in {path} do not fit the architecture: shapes {wrong[:3]}, "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    net.load_state_dict(state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
