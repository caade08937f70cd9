"""``--device auto|cpu|cuda[:N]|mps`` and the CUDA out-of-memory batch-size back-off."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from confidently.errors import UsageError
from confidently.run.console import console

T = TypeVar("T")


def resolve_device(name: str = "auto") -> torch.device:
    """The accelerator when there is one for ``auto``; otherwise exactly what was asked, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine (try --device auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available on this machine")
    return device


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def with_batch_backoff(work: Callable[[int], T], batch_size: int, *, minimum: int = 1) -> tuple[T, int]:
    """Run ``work(batch_size)``, halving the batch size on out-of-memory until it fits.

    Returns the result and the batch size that worked, so callers can report it.
    """
    size = batch_size
    while True:
        try:
            return work(size), size
        except Exception as error:  # noqa: BLE001 - re-raised unless it is an OOM we can back off from
            if not is_out_of_memory(error) or size <= minimum:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(minimum, size // 2)
            console.log(f"[yellow]out of memory: retrying with batch size {size}[/]")
