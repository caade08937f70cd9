"""Safetensors artifacts with metadata naming the tool, version, config and seed.

safetensors metadata is a ``str → str`` map; every value is stored JSON-encoded so numbers,
lists and nested configs survive the round trip.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from confidently import __version__
from confidently.errors import InvalidInput
from confidently.io.atomic import write_bytes_atomic


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value, separators=(",", ":"), sort_keys=True) for key, value in metadata.items()}


def decode_metadata(raw: dict[str, str] | None) -> dict[str, Any]:
    decoded = {}
    for key, value in (raw or {}).items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value  # written by another program: keep the plain string
    return decoded


def artifact_metadata(*, tool: str, kind: str, config: dict[str, Any] | None = None, seed: int | None = None,
                      **extra: Any) -> dict[str, Any]:
    """The metadata every artifact carries (see ``schemas/artifact-metadata.schema.json``)."""
    meta = {"format": "confidently.artifact/1", "tool": tool, "kind": kind, "version": __version__,
            "config": config or {}, "seed": seed,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    meta.update(extra)
    return meta


def artifact_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> bytes:
    """Serialise tensors and metadata to safetensors bytes (for files or stdout)."""
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    return save_bytes(contiguous, metadata=encode_metadata(metadata))


def save_artifact(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write an artifact atomically."""
    write_bytes_atomic(path, artifact_bytes(tensors, metadata))


def read_safetensors_bytes(data: bytes, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if len(data) < 8:
        raise InvalidInput(f"not a safetensors file (only {len(data)} bytes): {name}")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or header_len > len(data) - 8:
        raise InvalidInput(f"not a safetensors file (bad header): {name}")
    try:
        header = json.loads(data[8:8 + header_len])
        tensors = load_bytes(data)
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        raise InvalidInput(f"not a valid safetensors file ({exc}): {name}") from None
    return tensors, decode_metadata(header.get("__metadata__"))


def load_artifact(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact: (tensors, decoded metadata). Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"file does not exist: {path}")
    return read_safetensors_bytes(path.read_bytes(), str(path))


class ArtifactRows:
    """An artifact whose tensors are read a row at a time (memory-mapped), for per-record files as large as
    their datasets (segment maps, orders, explanations): ``shapes`` and ``meta`` come from the header alone."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = load_artifact_metadata(self.path)
        self._handle = None
        self.shapes = {key: tuple(self._open().get_slice(key).get_shape()) for key in self._open().keys()}

    def _open(self):
        if self._handle is None:
            from safetensors import safe_open

            self._handle = safe_open(str(self.path), framework="pt")
        return self._handle

    def row(self, key: str, index: int) -> torch.Tensor:
        """Row ``index`` of tensor ``key``."""
        return self._open().get_slice(key)[index:index + 1][0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}  # a handle stays in the process that opened it


def load_artifact_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Only an artifact's decoded metadata: reads the header, not the tensors (cheap on big files)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"file does not exist: {path}")
    with path.open("rb") as handle:
        head = handle.read(8)
        header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
        if header_len <= 0 or header_len > path.stat().st_size - 8:
            raise InvalidInput(f"not a safetensors file (bad header): {path}")
        try:
            header = json.loads(handle.read(header_len))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError) as exc:
            raise InvalidInput(f"not a valid safetensors file ({exc}): {path}") from None
    if 8 + header_len + end != path.stat().st_size:
        raise InvalidInput(f"truncated safetensors file: {path}")
    return decode_metadata(header.get("__metadata__"))
