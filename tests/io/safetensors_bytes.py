"""Safetensors files with a chosen header length, for the format-detection tests (io and models)."""

from safetensors.torch import save


def padded_safetensors(header_length: int, tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes whose header is exactly ``header_length`` long (metadata padded to get there)."""
    metadata = metadata or {}
    unpadded = int.from_bytes(save(tensors, metadata={**metadata, "pad": ""})[:8], "little")
    for pad in range(max(0, header_length - unpadded - 8), header_length - unpadded + 8):
        data = save(tensors, metadata={**metadata, "pad": "x" * pad})
        if int.from_bytes(data[:8], "little") == header_length:
            return data
    raise AssertionError(f"no padding gives a {header_length}-byte header")
