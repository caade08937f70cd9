"""Bring weights trained elsewhere (timm, torchvision, the robustness library) into a model file.

Safetensors state dicts load directly. Pickled checkpoints (``.pt``/``.pth``/``.ckpt``) can
run code when unpickled, so they load only when the caller says it trusts the file; even
then PyTorch's restricted ``weights_only`` unpickler is tried first.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from confidently.errors import InvalidInput, UsageError
from confidently.io.model_files import file_head, looks_pickled

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
PREFIXES = ("module.model.", "module.", "model.", "net.")


def read_foreign_weights(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
    """The raw tensors of a weights file: safetensors always, a pickle only with ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"weights file does not exist: {path}")
    if not looks_pickled(file_head(path)):
        from confidently.io.artifacts import load_artifact

        return load_artifact(path)[0]
    if not trust_pickle:
        raise InvalidInput(f"{path} is a pickle, which can run code when loaded; pass --trust-pickle "
                           "if you trust where it came from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as restricted:  # noqa: BLE001 - fall back to full unpickling, which the user asked for
        warnings.warn(f"{path} needs full unpickling ({type(restricted).__name__}); loading it because "
                      "--trust-pickle was given", stacklevel=2)
        return torch.load(path, map_location="cpu", weights_only=False)


def _unwrap(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), dict) and not isinstance(raw.get(key), torch.Tensor):
            return _unwrap(raw[key])
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def convert_state_dict(raw: dict[str, Any], net: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Match a foreign state dict to ``net``'s keys; return it and any normalisation found in it.

    Handles ``module.``/``model.`` prefixes (DataParallel, the robustness library), drops the
    robustness library's duplicate ``attacker`` copy, and reads its ``normalizer`` buffers.
    """
    tensors = _unwrap(raw)
    normalization: dict[str, list[float]] = {}
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if ".attacker." in f".{key}":
            continue
        if "normalizer." in key:
            name = key.rsplit(".", 1)[-1].replace("new_", "")
            if name in ("mean", "std"):
                normalization[name] = value.flatten().tolist()
            continue
        for prefix in PREFIXES:
            if key.startswith(prefix) and key[len(prefix):] in net.state_dict():
                key = key[len(prefix):]
                break
        state[key] = value
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {list(state[k].shape)} vs {list(own[k].shape)}" for k in own if k in state and
             state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise UsageError(f"the weights do not fit this architecture: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {wrong[:3]} (check --arch and --num-classes)")
    return state, normalization


def classifier_width(raw: dict[str, Any], arch: str, img_size: int | None = None) -> int | None:
    """The number of classes of a foreign state dict: the rows of ``arch``'s own classifier weight.

    The architecture says which key is its classifier (timm's ``get_classifier()``); a state
    dict's key order says nothing (safetensors headers are unordered).
    """
    from confidently.models.registry import create_model

    with torch.device("meta"):  # only the module names are needed: allocate nothing
        net = create_model(arch, 1, img_size=img_size).net
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    head = head[0] if isinstance(head, tuple) else head  # distilled ViTs: (head, head_dist)
    names = [name for name, module in net.named_modules() if module is head and name]
    if not names:
        return None
    key = f"{names[0]}.weight"
    tensors = {k: v for k, v in _unwrap(raw).items() if ".attacker." not in f".{k}"}
    for candidate in (key, *(prefix + key for prefix in PREFIXES)):
        if candidate in tensors and tensors[candidate].ndim >= 2:
            return int(tensors[candidate].shape[0])
    return None
