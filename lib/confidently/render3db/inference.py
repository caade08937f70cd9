"""3DB's ``inference`` section as a model: ``module``/``class``/``args`` name a torchvision or timm network.

``module: torchvision.models`` (or a submodule such as ``torchvision.models.resnet`` or
``torchvision.models.detection``) builds ``class`` through ``torchvision.models.get_model``; ``module: timm``
through ``timm.create_model``. The network is wrapped in a :class:`~confidently.models.classifier.Classifier`
with the config's ``normalization`` (default ImageNet's) and ``resolution``, so it takes pixels in [0, 1] like
every model file. ``args.pretrained: True`` reads the weights from the local torch hub cache
(``torch.hub.get_dir()/checkpoints``, where torchvision keeps what it downloaded) and never downloads: a
missing file is invalid input naming the file to put there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.models.classifier import Classifier

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def checkpoint_path(module: str, name: str) -> Path:
    """Where the hub cache keeps ``name``'s pretrained weights (the file name its download URL ends in)."""
    if module.split(".", 1)[0] == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        url = getattr(cfg, "url", None) if cfg is not None else None
        filename = os.path.basename(url) if url else f"{name}.safetensors"
    else:
        from torchvision.models import get_model_weights

        try:
            filename = os.path.basename(get_model_weights(name).DEFAULT.url)
        except (ValueError, AttributeError):
            raise UsageError(f"inference.class {name!r}: torchvision has no pretrained weights for it") from None
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never arbitrary objects


def _network(module: str, name: str, args: dict[str, Any]) -> torch.nn.Module:
    if module.split(".", 1)[0] == "timm":
        import timm

        if name not in timm.list_models():
            raise UsageError(f"inference.class {name!r}: not a timm model name")
        return timm.create_model(name, pretrained=False, **args)
    if module.split(".", 1)[0] != "torchvision":
        raise UsageError(f"inference.module {module!r}: choose torchvision.models (or a submodule) or timm, or give "
                         "inference.model FILE")
    from torchvision.models import detection, get_model, list_models

    if name not in list_models():
        raise UsageError(f"inference.class {name!r}: not a torchvision model name")
    if name in list_models(module=detection):
        args = {"weights_backbone": None, **args}  # the backbone's ImageNet weights would be downloaded
    return get_model(name, weights=None, **args)


def _is_detection(module: str, name: str) -> bool:
    if module.split(".", 1)[0] == "timm":
        return False
    from torchvision.models import detection, list_models

    return name in list_models(module=detection)


def threedb_model(inference: dict[str, Any], classes: list[str] | None = None) -> Classifier:
    """The network ``inference`` names, its pretrained weights from the local cache when asked."""
    module, name = str(inference.get("module") or "torchvision.models"), str(inference["class"])
    args = dict(inference.get("args") or {})
    pretrained = bool(args.pop("pretrained", False))
    args.pop("weights", None)
    net = _network(module, name, args)
    if pretrained:
        path = checkpoint_path(module, name)
        if not path.is_file():
            raise InvalidInput(f"inference {name}: pretrained weights expected at {path}; nothing is downloaded: "
                               f"put the file there (or set TORCH_HOME), or give pretrained: False")
        result = net.load_state_dict(_read_weights(path), strict=False)
        if result.missing_keys:
            raise InvalidInput(f"{path}: weights do not fit {name} (missing {result.missing_keys[:3]})")
    resolution = inference.get("resolution") or 224
    height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    norm = inference.get("normalization") or {}
    mean, std = tuple(norm.get("mean", IMAGENET_MEAN)), tuple(norm.get("std", IMAGENET_STD))
    shape = inference.get("output_shape")
    default = 91 if _is_detection(module, name) else (shape[0] if shape and len(shape) == 1 else 1000)  # COCO
    num_classes = int(args.get("num_classes") or default)
    return Classifier(net, arch=f"{module}.{name}", arch_kwargs=args, num_classes=num_classes,
                      input_size=(3, int(height), int(width)), mean=mean, std=std, classes=classes).eval()
