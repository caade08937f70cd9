"""A safetensors file written block of rows by block of rows, for outputs as large as the dataset.

Tools that produce one row per input (adversarial images, features) append each batch's rows;
memory stays one batch. Each tensor's rows are spooled to a temporary file beside the output,
and :meth:`ShardWriter.close` writes the header and copies the spools into the final file
atomically, so a reader never sees a partial shard.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import torch

from confidently.io.artifacts import encode_metadata
from confidently.io.atomic import atomic_write

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                      torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.int32: "I32",
                      torch.int64: "I64", torch.bool: "BOOL"}


class ShardWriter:
    """Append rows to named tensors, then :meth:`close` with the metadata (see ``save_artifact``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spools: dict[str, IO[bytes]] = {}
        self._rows: dict[str, int] = {}
        self._layout: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}

    def append(self, **tensors: torch.Tensor) -> None:
        """Add rows (dimension 0) to each named tensor; every later block must match dtype and row shape."""
        for name, block in tensors.items():
            block = block.detach().cpu().contiguous()
            layout = (block.dtype, tuple(block.shape[1:]))
            if name not in self._layout:
                if block.dtype not in SAFETENSORS_DTYPES:
                    raise TypeError(f"{name}: dtype {block.dtype} cannot be stored in safetensors")
                self._layout[name] = layout
                self._rows[name] = 0
                self._spools[name] = tempfile.TemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.")
            elif self._layout[name] != layout:
                raise ValueError(f"{name}: rows of {layout} after rows of {self._layout[name]}")
            self._spools[name].write(block.view(torch.uint8).numpy().tobytes() if block.numel() else b"")
            self._rows[name] += block.shape[0]

    def close(self, metadata: dict[str, Any],
              empty: dict[str, tuple[torch.dtype, tuple[int, ...]]] | None = None) -> None:
        """Write the file atomically. ``empty`` gives the layout of tensors that got no rows (else omitted)."""
        for name, layout in (empty or {}).items():
            self._layout.setdefault(name, layout)
            self._rows.setdefault(name, 0)
        header: dict[str, Any] = {"__metadata__": encode_metadata(metadata)}
        offset = 0
        for name in sorted(self._layout):
            dtype, row_shape = self._layout[name]
            size = self._rows[name] * dtype.itemsize * _product(row_shape)
            header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": [self._rows[name], *row_shape],
                            "data_offsets": [offset, offset + size]}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        try:
            with atomic_write(self.path) as handle:
                handle.write(len(encoded).to_bytes(8, "little"))
                handle.write(encoded)
                for name in sorted(self._layout):
                    if name in self._spools:
                        self._spools[name].seek(0)
                        shutil.copyfileobj(self._spools[name], handle, 1 << 22)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the spooled rows (the output is not written)."""
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total
