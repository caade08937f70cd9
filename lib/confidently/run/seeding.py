"""Seeds that depend on (seed, id), never on batch size, order, shard or engine."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import os
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from the run seed and any keys (a record id, a model index, a restart)."""
    text = ":".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def record_generator(seed: int, record_id: str, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded for one record: the record's randomness is the same everywhere."""
    import torch

    return torch.Generator(device=device).manual_seed(derive_seed(seed, record_id, *keys))


def record_seeds(seed: int, record_ids: Sequence[str], *keys: object) -> list[int]:
    """One 31-bit seed per record from (seed, id, keys): small enough for NumPy, which code such as
    ``corrupt(..., seeds=...)`` seeds per image."""
    return [derive_seed(seed, record_id, *keys) % 2**31 for record_id in record_ids]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also makes torch pick deterministic kernels.

    NumPy and torch are seeded when they are imported if they are not yet, so a command that stops before
    it needs them (a usage error found in its body) never pays for importing them.
    """
    random.seed(seed)
    for name, seed_module in (("numpy", lambda np: np.random.seed(seed % 2**32)),
                              ("torch", lambda torch: _seed_torch(torch, seed, deterministic))):
        if name in sys.modules:
            seed_module(sys.modules[name])
        else:
            _SeedOnImport.install(name, seed_module)


def _seed_torch(torch: Any, seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Runs ``seed_module(module)`` right after ``name`` is first imported (a post-import hook), then leaves."""

    def __init__(self, name: str, seed_module: Any):
        self.name, self.seed_module = name, seed_module

    @classmethod
    def install(cls, name: str, seed_module: Any) -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, cls) and f.name == name)]
        sys.meta_path.insert(0, cls(name, seed_module))

    def find_spec(self, fullname: str, path: Any, target: Any = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        load, seed_module = spec.loader.exec_module, self.seed_module

        def exec_module(module: Any) -> None:
            load(module)
            seed_module(module)

        spec.loader.exec_module = exec_module
        return spec
