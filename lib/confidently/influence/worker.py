"""One farm job: train, transfer, record every output, and write one safetensors file atomically.

Re-running a finished job is a no-op (its file exists with the same plan, job and recipe), so a
killed farm resumes by running the plan again; a half-written file never exists (write + rename), and
the temporary file a killed write leaves behind is removed when the job is next run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import torch

from confidently.influence.outputs import all_outputs
from confidently.influence.plan import check_job
from confidently.influence.recipes import Recipe, load_recipe
from confidently.io.artifacts import artifact_metadata, load_artifact_metadata, save_artifact
from confidently.io.atomic import remove_stale_temporaries

RESULT_KIND = "influence.result"
STARTED = time.time()  # temporaries older than this process were left by a killed one


def result_path(out_dir: str | os.PathLike, job: dict[str, Any]) -> Path:
    return Path(out_dir) / str(job["run_id"]) / f"job-{int(job['job_id']):06d}.safetensors"


def finished(path: Path, job: dict[str, Any], recipe_sha: str) -> dict[str, Any] | None:
    """The metadata of ``job``'s result when it exists for the same plan, job and recipe (else None)."""
    if not path.exists():
        return None
    try:
        meta = load_artifact_metadata(path)  # refuses truncated files too
    except Exception:  # an unreadable file is redone, never trusted
        return None
    same = (meta.get("plan_sha256"), meta.get("job_id"), meta.get("recipe_sha256")) == (
        job.get("plan_sha256"), job["job_id"], recipe_sha)
    return meta if same else None


def run_job(recipe: Recipe, job: dict[str, Any], out_dir: str | os.PathLike, overwrite: bool = False,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run ``job`` on ``device`` unless its result exists; returns the ``influence.result`` record, which
    says where the job ran (``device``, as in the result file's metadata)."""
    check_job(job)
    if job["num_units"] != recipe.num_units:
        raise ValueError(f"job {job['job_id']} has {job['num_units']} units; the recipe has {recipe.num_units}")
    path = result_path(out_dir, job)
    remove_stale_temporaries(path, older_than=STARTED)
    recipe_sha = recipe.checksum()
    base = {"kind": RESULT_KIND, "schema": 1, "run_id": job["run_id"], "job_id": job["job_id"], "path": str(path),
            **({"holdout": True} if job.get("holdout") else {})}
    meta = None if overwrite else finished(path, job, recipe_sha)
    if meta is not None:
        return {**base, "status": "done-before", "source_acc": meta.get("source_acc"),
                "target_acc": meta.get("target_acc"), "seconds": 0.0,
                **({"device": meta["device"]} if "device" in meta else {})}
    device = torch.device(device)
    started = time.perf_counter()
    source_acc, results = recipe.run(job["include"], int(job["train_seed"]), device=device)
    mask = torch.zeros(recipe.num_units, dtype=torch.bool)
    mask[job["include"]] = True
    tensors: dict[str, torch.Tensor] = {"mask": mask}
    target_acc = {}
    for task, result in results.items():
        for name, values in all_outputs(result.logits, result.labels).items():
            tensors[f"{task}/{name}"] = values.contiguous()
        tensors[f"{task}/labels"] = result.labels.long().contiguous()
        target_acc[task] = float(tensors[f"{task}/correct"].mean())
    seconds = time.perf_counter() - started
    meta = artifact_metadata(tool="influence", kind="result", seed=int(job["train_seed"]) % 2**63,
                             run_id=job["run_id"], job_id=job["job_id"], plan_sha256=job.get("plan_sha256"),
                             recipe_sha256=recipe_sha, recipe_kind=recipe.kind, mode=job.get("mode"),
                             granularity=job.get("granularity", "class"), unit_names=recipe.unit_names,
                             holdout=bool(job.get("holdout", False)),
                             order=job.get("order"), k=job.get("k"), rep=job.get("rep"), source_acc=source_acc,
                             target_acc=target_acc, seconds=seconds, hostname=socket.gethostname(),
                             device=str(device), torch=torch.__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_artifact(path, tensors, meta)
    return {**base, "status": "ok", "source_acc": source_acc, "target_acc": target_acc, "seconds": round(seconds, 3),
            "device": str(device)}


def placed(device: torch.device) -> torch.device:
    """``cuda`` as the GPU it means here (``cuda:0`` in a worker shown one GPU), so records name it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def worker_threads() -> int:
    """Torch threads for one worker: OMP_NUM_THREADS (engines set it per worker), else the CPUs Slurm gave
    the task (SLURM_CPUS_PER_TASK), else 1."""
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


class JobRunner:
    """A picklable worker for engines (``map_stateful``): loads the recipe once per worker process and
    resolves ``device`` there, so ``auto`` finds the GPU the engine gave that worker (Ray: its num_gpus)."""

    def __init__(self, recipe_spec: str | dict[str, Any], out_dir: str, overwrite: bool = False,
                 device: str = "cpu"):
        self.recipe_spec, self.out_dir, self.overwrite, self.device = recipe_spec, out_dir, overwrite, device
        self._recipe: Recipe | None = None
        self._device: torch.device | None = None

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        if self._recipe is None:
            from confidently.run.device import resolve_device

            torch.set_num_threads(worker_threads())
            self._device = placed(resolve_device(self.device))
            self._recipe = load_recipe(self.recipe_spec)
        try:
            return run_job(self._recipe, job, self.out_dir, self.overwrite, self._device)
        except Exception as exc:  # one failed job must not sink the farm; its record says why
            return {"kind": RESULT_KIND, "schema": 1, "run_id": job.get("run_id"), "job_id": job.get("job_id"),
                    "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
