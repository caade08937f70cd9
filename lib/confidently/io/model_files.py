"""Model files: one ``.safetensors`` with the state dict and metadata that rebuild the model.

The metadata (``schemas/model-metadata.schema.json``) names the architecture and its
arguments, the number of classes, the input size, the normalisation (which lives inside the
model, so every tool feeds pixels in [0, 1]), the class names and how it was trained.
Loading never unpickles: a pickled checkpoint is refused with an explanation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput
from confidently.io.artifacts import artifact_bytes, read_safetensors_bytes
from confidently.io.atomic import write_bytes_atomic

MODEL_FORMAT = "confidently.model/1"
REQUIRED_METADATA = ("format", "arch", "arch_kwargs", "num_classes", "input_size", "mean", "std")
PICKLE_HINT = ("it looks like a pickled PyTorch checkpoint (.pt/.pth); pickles can run code when loaded, "
               "so confidently never loads them. Convert it once with "
               "`advtrain import --arch NAME --trust-pickle CHECKPOINT --out model.safetensors` "
               "if you trust where it came from")


def looks_pickled(head: bytes) -> bool:
    """A zip archive (torch.save) or a pickle protocol header."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def write_model_file(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write a model file atomically after checking its metadata is complete."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    write_bytes_atomic(path, artifact_bytes(state_dict, metadata))


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file: (state dict, metadata). Refuses pickles and files without metadata."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"model file does not exist: {path}")
    data = path.read_bytes()
    if looks_pickled(data[:4]):
        raise InvalidInput(f"{path}: {PICKLE_HINT}")
    tensors, metadata = read_safetensors_bytes(data, str(path))
    if metadata.get("format") != MODEL_FORMAT:
        raise InvalidInput(f"{path} is a safetensors file but not a confidently model file (its metadata lacks "
                           f"\"format\": \"{MODEL_FORMAT}\"); for a bare timm state dict use "
                           "`advtrain import --arch NAME WEIGHTS --out model.safetensors`")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise InvalidInput(f"{path} lacks model metadata {missing}")
    return tensors, metadata
