"""Model files: one ``.safetensors`` with the state dict and metadata that rebuild the model.

The metadata (``schemas/model-metadata.schema.json``) names the architecture and its
arguments, the number of classes, the input size, the normalisation (which lives inside the
model, so every tool feeds pixels in [0, 1]), the class names and how it was trained.
Loading never unpickles: a pickled checkpoint is refused with an explanation.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from confidently.errors import InvalidInput
from confidently.io.artifacts import artifact_bytes, read_safetensors_bytes
from confidently.io.atomic import write_bytes_atomic
from confidently.io.records import check_input_file

MODEL_FORMAT = "confidently.model/1"
REQUIRED_METADATA = ("format", "arch", "arch_kwargs", "num_classes", "input_size", "mean", "std")
PICKLE_HINT = ("it looks like a pickled PyTorch checkpoint (.pt/.pth); pickles can run code when loaded, "
               "so confidently never loads them. Convert it once with "
               "`advtrain import --arch NAME --trust-pickle CHECKPOINT --out model.safetensors` "
               "if you trust where it came from")
ZIP_SIGNATURE = b"PK\x03\x04"
PICKLE_PROTO = 0x80
PICKLE_PROTOCOLS = range(2, 6)
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit on a header's size


def is_safetensors_header(head: bytes) -> bool:
    """The file starts with an 8-byte little-endian length and that many bytes of a JSON object.

    A length's low byte is 0x80 in 1 of 256 files, so a safetensors file can start like a pickle;
    its header tells them apart.
    """
    if len(head) < 8:
        return False
    length = int.from_bytes(head[:8], "little")
    if not 2 <= length <= len(head) - 8:
        return False
    try:
        return isinstance(json.loads(head[8:8 + length]), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def looks_pickled(head: bytes) -> bool:
    """A zip archive (torch.save's default) or a pickle's PROTO opcode (0x80, protocol 2..5), not a safetensors file.

    ``head`` is the file's start, long enough to hold a safetensors header (see :func:`file_head`).
    """
    if is_safetensors_header(head):
        return False
    return head.startswith(ZIP_SIGNATURE) or (len(head) >= 2 and head[0] == PICKLE_PROTO and
                                              head[1] in PICKLE_PROTOCOLS)


def file_head(path: str | os.PathLike) -> bytes:
    """The first bytes of a weights file: enough to recognise its format, including a safetensors header."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if length > min(MAX_SAFETENSORS_HEADER, os.fstat(handle.fileno()).st_size - 8):
            return head  # no room for such a header: not safetensors, and no reason to read on
        return head + handle.read(length)


def write_model_file(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write a model file atomically after checking its metadata is complete."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    write_bytes_atomic(path, artifact_bytes(state_dict, metadata))


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file: (state dict, metadata). Refuses pickles and files without metadata."""
    path = check_input_file(path, "model .safetensors file")  # named on the command line: a usage error (exit 2)
    data = path.read_bytes()
    if looks_pickled(data):
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
