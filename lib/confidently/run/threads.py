"""A worker's share of the CPUs: its thread pools sized to the CPUs the engine gave it, before work starts.

Left alone, every library in a worker starts a thread per core, so N workers on a machine run N × cores
threads on its cores and slow each other down. Engines call :func:`pin_threads` inside each worker
process with its share (Ray: the ``num_cpus`` of its task or actor). Renderers take their own count
from ``render_args.threads``, which render-3db makes the share of its Ray actors.
"""

from __future__ import annotations

import math
import os

# Read by OpenMP, MKL, OpenBLAS and numexpr when they start: libraries loaded later and child processes.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

_pinned: int | None = None


def cpu_share(num_cpus: float) -> int:
    """Threads for a worker given ``num_cpus`` CPUs: the whole CPUs, at least one (as Ray counts them)."""
    return max(1, math.floor(num_cpus))


def pin_threads(threads: int) -> None:
    """Size this process's thread pools to ``threads``: torch's (OpenMP and MKL) now, and the environment
    that libraries loaded later and child processes read. Once per process; again only for a new count."""
    global _pinned
    if threads == _pinned:
        return
    import torch

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    _pinned = threads
