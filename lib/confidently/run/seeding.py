"""Seeds that depend on (seed, id), never on batch size, order, shard or engine."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from the run seed and any keys (a record id, a model index, a restart)."""
    text = ":".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def record_generator(seed: int, record_id: str, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for one record: the record's randomness is the same everywhere."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, record_id, *keys))


def record_seeds(seed: int, record_ids: Sequence[str], *keys: object) -> list[int]:
    """One 31-bit seed per record from (seed, id, keys): small enough for NumPy, which code such as
    ``corrupt(..., seeds=...)`` seeds per image."""
    return [derive_seed(seed, record_id, *keys) % 2**31 for record_id in record_ids]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also makes torch pick deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
