"""Save a :class:`Classifier` to one safetensors file and rebuild it from that file alone."""

from __future__ import annotations

import os
from typing import Any

import torch

from confidently.errors import InvalidInput
from confidently.io.model_files import read_model_file, write_model_file
from confidently.models.classifier import Classifier
from confidently.models.registry import create_model


def save_model(model: Classifier, path: str | os.PathLike, training: dict[str, Any] | None = None) -> None:
    """Write ``model`` atomically; ``training`` (recipe, eps, seed, data hash...) joins its metadata."""
    if training is not None:
        model.training_info.update(training)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    write_model_file(path, state, model.metadata())


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild a model from its file (architecture from the metadata, weights from the tensors)."""
    state, meta = read_model_file(path)
    channels, height, _ = meta["input_size"]
    model = create_model(meta["arch"], meta["num_classes"], in_chans=channels, img_size=height, mean=meta["mean"],
                         std=meta["std"], classes=meta.get("classes"), **meta["arch_kwargs"])
    model.training_info = dict(meta.get("training") or {})
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InvalidInput(f"{path}: weights do not match architecture {meta['arch']} "
                           f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return model.to(device).eval()
