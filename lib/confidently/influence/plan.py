"""Jobs for the influence farm (thesis Algorithm 1, step 1; the counterfactual of §8.2).

A plan is a list of JSON jobs, one per model: which source units (classes, or examples) it
trains on and its training seed. Plans are deterministic by seed and carry a checksum so that
result files from another plan are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.run.seeding import derive_seed

JOB_KIND = "influence.job"


def plan_checksum(jobs: Sequence[dict[str, Any]]) -> str:
    """sha256 over the jobs' identities (what each model trains on, its seed, and whether it is held out)."""
    digest = hashlib.sha256()
    for job in jobs:
        identity = [job["job_id"], job["include"], job["train_seed"]] + (["holdout"] if job.get("holdout") else [])
        digest.update(json.dumps(identity).encode())
    return digest.hexdigest()


def _finish(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checksum = plan_checksum(jobs)
    for job in jobs:
        job["plan_sha256"] = checksum
    return jobs


def subset_plan(num_units: int, num_models: int, alpha: float = 0.5, sampling: str = "fixed", seed: int = 0,
                run_id: str = "run", granularity: str = "class", holdout: int = 0) -> list[dict[str, Any]]:
    """``num_models`` jobs, each including round(α·K) units (``fixed``) or each unit with probability α, then
    ``holdout`` more drawn the same way and marked ``"holdout": true`` (job ids ``num_models`` onwards): they
    are trained like the others, left out of every estimate, and score estimates (``influence lds``). The
    first ``num_models`` jobs are the same whatever ``holdout`` is."""
    if not 0 < alpha < 1:
        raise UsageError(f"`alpha` {alpha}: expected 0 < α < 1 (some models must see a unit and some not)")
    if num_units < 2 or num_models < 2:
        raise UsageError("an influence plan needs at least 2 units and 2 models")
    if sampling not in ("fixed", "bernoulli"):
        raise UsageError(f"`sampling` {sampling!r}: choose fixed or bernoulli")
    if holdout < 0:
        raise UsageError(f"`holdout` {holdout}: expected a number of jobs >= 0")
    size = round(alpha * num_units)
    jobs = []
    for job_id in range(num_models + holdout):
        generator = torch.Generator().manual_seed(derive_seed(seed, run_id, "plan", job_id))
        if sampling == "fixed":
            include = sorted(torch.randperm(num_units, generator=generator)[:size].tolist())
        else:
            include = torch.nonzero(torch.rand(num_units, generator=generator) < alpha).flatten().tolist()
        jobs.append({"kind": JOB_KIND, "schema": 1, "run_id": run_id, "job_id": job_id, "mode": "subset",
                     "granularity": granularity, "num_units": num_units, "alpha": alpha, "sampling": sampling,
                     "include": include, "train_seed": derive_seed(seed, run_id, "train", job_id)})
        if job_id >= num_models:
            jobs[-1]["holdout"] = True
    return _finish(jobs)


def counterfactual_plan(overall: torch.Tensor, orders: Sequence[str], ks: Sequence[int], runs: int, seed: int = 0,
                        run_id: str = "counterfactual") -> list[dict[str, Any]]:
    """Jobs that train on every unit except k: the most negative (``bottom``), most positive (``top``) or
    random ones, ``runs`` times each (ranking ties broken by unit index). k = 0 becomes one ``full`` set.
    A NaN influence (a unit in every model or in none) says nothing, so it ranks last in both orders."""
    count = len(overall)
    values = overall.tolist()

    def rank(sign: float):
        return lambda k: (True, 0.0, k) if math.isnan(values[k]) else (False, sign * values[k], k)

    ascending = sorted(range(count), key=rank(1.0))
    descending = sorted(range(count), key=rank(-1.0))
    jobs = []
    for order in orders:
        if order not in ("bottom", "top", "random"):
            raise UsageError(f"`order` {order!r}: choose bottom, top or random")
    for k in ks:
        if not 0 <= k < count:
            raise UsageError(f"k = {k}: must lie in 0..{count - 1} (at least one unit stays)")
    if 0 in ks:  # removing nothing is the full source, whatever the order: run it once
        orders = ["full", *orders]
    for order in orders:
        for k in ([0] if order == "full" else [k for k in ks if k > 0]):
            for rep in range(runs):
                if order == "random":
                    generator = torch.Generator().manual_seed(derive_seed(seed, run_id, "random", k, rep))
                    exclude = sorted(torch.randperm(count, generator=generator)[:k].tolist())
                elif order == "full":
                    exclude = []
                else:
                    exclude = sorted((ascending if order == "bottom" else descending)[:k])
                include = sorted(set(range(count)) - set(exclude))
                jobs.append({"kind": JOB_KIND, "schema": 1, "run_id": run_id, "job_id": len(jobs),
                             "mode": "counterfactual", "granularity": "class", "num_units": count, "order": order,
                             "k": k, "rep": rep, "exclude": exclude, "include": include,
                             "train_seed": derive_seed(seed, run_id, "train", order, k, rep)})
    return _finish(jobs)


def select_jobs(jobs: Sequence[dict[str, Any]], job_index: int | str | None = None,
                job_range: str | None = None) -> list[dict[str, Any]]:
    """The job whose id is ``job_index`` (a Slurm array task's $SLURM_ARRAY_TASK_ID), or the ids ``A:B`` of
    ``job_range`` (B exclusive); every job when neither is given."""
    if job_index is None and job_range is None:
        return list(jobs)
    if job_index is not None:
        try:
            wanted = [int(job_index)]
        except ValueError:
            raise UsageError(f"job_index {job_index!r}: expected an integer") from None
    else:
        low, _, high = job_range.partition(":")
        try:
            wanted = list(range(int(low), int(high)))
        except ValueError:
            raise UsageError(f"job_range {job_range!r}: expected A:B (B exclusive)") from None
    by_id = {job.get("job_id"): job for job in jobs}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise UsageError(f"job index {missing[0]} is beyond the plan (it has jobs 0..{len(jobs) - 1})")
    return [by_id[i] for i in wanted]


def parse_job_ids(spec: str) -> set[int] | None:
    """Job ids in Slurm ``--array`` syntax (``40-49,55``, ranges inclusive: what `influence status` prints), or
    ``all`` (None: every job)."""
    if spec.strip() == "all":
        return None
    ids: set[int] = set()
    try:
        for part in (p.strip() for p in spec.split(",")):
            low, dash, high = part.partition("-")
            ids.update(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise UsageError(f"job ids {spec!r}: expected ids and inclusive ranges such as 40-49,55, or all") from None
    return ids


def check_job(job: dict[str, Any]) -> None:
    """Refuse a malformed job before spending a training run on it."""
    if job.get("kind") != JOB_KIND:
        raise UsageError(f"expected an {JOB_KIND} record (from `influence plan`), got kind {job.get('kind')!r}")
    units, include = job.get("num_units"), job.get("include")
    if not isinstance(units, int) or not isinstance(include, list):
        raise UsageError("a job needs num_units and an include list")
    if include != sorted(set(include)) or (include and (include[0] < 0 or include[-1] >= units)):
        raise UsageError(f"job {job.get('job_id')}: include must be sorted, unique and within 0..{units - 1}")
