"""A plan as a Slurm job array: the sbatch script whose array tasks each run one job of the plan, and which
jobs are still missing — as an ``--array`` spec, so a killed farm is resubmitted for those only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from confidently.influence.worker import result_path


def array_spec(ids: list[int]) -> str:
    """Sorted job ids as a Slurm ``--array`` spec: [0, 1, 2, 5, 7, 8] → "0-2,5,7-8"."""
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def farm_status(jobs: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Any]:
    """How many jobs of a plan have their result under ``out_dir``, and the missing ones as an array spec."""
    missing = [job["job_id"] for job in jobs if not result_path(out_dir, job).exists()]
    return {"kind": "influence.status", "jobs": len(jobs), "done": len(jobs) - len(missing), "missing": len(missing),
            "array": array_spec(missing)}


def sbatch_script(jobs: list[dict[str, Any]], plan_file: str | os.PathLike, recipe: str,
                  out_dir: str | os.PathLike, *, concurrency: int = 64,
                  gpus_per_task: int = 1, cpus_per_task: int = 1, log_dir: str | os.PathLike = "logs",
                  time_limit: str = "01:00:00", partition: str | None = None, array: str | None = None) -> str:
    """An sbatch job-array file whose tasks each run one job of the plan (`influence train --job-index`),
    ``concurrency`` at a time, each with ``cpus_per_task`` torch threads and ``gpus_per_task`` GPUs (the
    job trains on the GPU Slurm gives it, ``--device auto``; with 0 it asks for none and runs on the CPU);
    ``array`` (default: every job) picks the job ids. Slurm opens the logs before the script runs, so
    ``log_dir`` must exist by then."""
    log = Path(log_dir).resolve()
    lines = ["#!/bin/bash", f"#SBATCH --job-name=influence-{jobs[0].get('run_id', 'run')}",
             f"#SBATCH --array={array or f'0-{len(jobs) - 1}'}%{concurrency}", f"#SBATCH --time={time_limit}",
             f"#SBATCH --cpus-per-task={cpus_per_task}", f"#SBATCH --output={log}/influence-%A_%a.out"]
    if gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["set -euo pipefail", "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK",
              f"influence train --plan {Path(plan_file).resolve()} --job-index $SLURM_ARRAY_TASK_ID "
              f"--recipe {recipe} --out-dir {Path(out_dir).resolve()} --device {'auto' if gpus_per_task else 'cpu'}"]
    return "\n".join(lines) + "\n"
