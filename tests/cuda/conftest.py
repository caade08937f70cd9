"""The ``cuda`` tier: every tool on a GPU with tiny models, in seconds (``pytest -m cuda``; ``make gpu-check``).

Skipped where no GPU is. ``CONFIDENTLY_TIER_DEVICE=cpu`` runs the tests that do not need CUDA itself (NCCL,
out-of-memory) on the CPU instead, to check the tier on a machine without a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REAL_BIN, ROOT

TIER_DEVICE = os.environ.get("CONFIDENTLY_TIER_DEVICE", "cuda")


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(scope="session")
def device() -> str:
    """The tier's device: the GPU, or the CPU when CONFIDENTLY_TIER_DEVICE=cpu checks the tier itself."""
    if TIER_DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (CONFIDENTLY_TIER_DEVICE=cpu runs the tier on the CPU)")
    return TIER_DEVICE


@pytest.fixture(scope="session")
def gpu() -> str:
    """A real GPU, for what only CUDA has (NCCL, its out-of-memory error, its allocator)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return "cuda"


# The installed executables, not the warm test server: a forked server would share one CUDA driver state.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(REAL_BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}


def run(*command: str, cwd, input: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """One command as a user types it (list form), failing the test with its stderr when it fails."""
    done = subprocess.run(list(command), cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout,
                          env=ENV)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


def torchrun(*command: str, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 1 TOOL ...`` (the tools are console scripts; torchrun runs them as modules)."""
    return run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "--no-python", *command, cwd=cwd, timeout=timeout)
