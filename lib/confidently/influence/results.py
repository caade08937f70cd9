"""Reading a farm's results into the estimator's sums: which files, which target task, and checks that
every file belongs to one plan and one recipe and counts once — results that mix runs would give wrong
influences without any sign of it. Partial sums of shards merge under the same checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.influence.estimate import InfluenceSums
from confidently.influence.recipes import VAL
from confidently.influence.worker import RESULT_KIND
from confidently.io.artifacts import load_artifact, load_artifact_metadata
from confidently.io.records import Record
from confidently.run.console import console


def result_files(records: Iterable[Record] = (), folder: str | Path | None = None) -> list[Path]:
    """The result files of finished jobs: every ``job-*.safetensors`` under ``folder``, else the files the
    ``influence.result`` records of `influence train` name (a failed job has none)."""
    if folder is not None:
        files = sorted(Path(folder).rglob("job-*.safetensors"))
    else:
        files = []
        for record in records:
            if record.data.get("kind") != RESULT_KIND:
                raise record.error("expected influence.result records (from `influence train`)", "kind")
            if record.data.get("status") in ("ok", "done-before"):
                files.append(Path(record.data["path"]))
    if not files:
        raise NoValidResult("no result files to read")
    return files


def choose_task(tasks: list[str], target: str | None, selecting: bool) -> str:
    """The task to read: ``target``, the only one, or — with a validation split — the validation split when
    ``selecting`` units (ranking) and the test split when reporting, since selecting and scoring on one set
    inflates the gain."""
    if target is not None:
        if target not in tasks:
            raise UsageError(f"`target` {target!r}: the results hold {', '.join(tasks)}")
        if selecting and not target.endswith(VAL) and target + VAL in tasks:
            console.print(f"[yellow]warning:[/] ranking on {target}'s test set; a counterfactual scored on the "
                          f"same set overstates its gain (rank on target {target}{VAL})")
        return target
    bases = sorted({task.removesuffix(VAL) for task in tasks})
    if len(bases) == 1:
        chosen = bases[0] + VAL if selecting and bases[0] + VAL in tasks else bases[0]
        if chosen in tasks:
            return chosen
    raise UsageError(f"results hold tasks {', '.join(tasks)}: choose one as the target")


def held_out(meta: dict[str, Any], jobs: set[int] | None = None) -> bool:
    """Whether a result (its metadata) is held out of estimates: a job `influence plan --holdout` marked, or
    one of ``jobs`` (job ids)."""
    return bool(meta.get("holdout")) or (jobs is not None and meta.get("job_id") in jobs)


@dataclass
class FarmResults:
    """The models of a farm: which units each saw (``masks`` m×K, from the files, never the plan), its
    ``outputs`` on the target task (m×n), the target ``labels`` (n) and each model's job id (``jobs``, m);
    ``meta`` is the first file's metadata with the task read (``target``), every file's job id (``job_ids``)
    and how many files ``keep`` left out (``set_aside``)."""

    masks: torch.Tensor
    outputs: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any]
    jobs: torch.Tensor | None = None

    def sums(self, folds: int = 0) -> InfluenceSums:
        """The estimator's sums; ``folds`` > 0 adds the linear datamodels' (fold = job id mod ``folds``)."""
        return InfluenceSums.empty(self.masks.shape[1], self.labels, folds).add(self.masks, self.outputs, self.jobs)


def load_results(files: list[Path], target: str | None = None, output: str = "softmax_correct",
                 keep: Callable[[dict[str, Any]], bool] | None = None, selecting: bool = True) -> FarmResults:
    """Every file's mask and ``output`` on ``target`` (see :func:`choose_task`, ``selecting``), of the files
    whose metadata ``keep`` accepts (default: those not held out, see :func:`held_out`); a job twice, or
    results of another plan or recipe, would skew the sums, so they are refused."""
    keep = keep or (lambda meta: not held_out(meta))
    masks, outputs, meta0, labels, owners, set_aside = [], [], None, None, {}, 0
    for path in files:
        if not keep(load_artifact_metadata(path)):
            set_aside += 1
            continue
        tensors, meta = load_artifact(path)
        if meta0 is None:
            meta0 = meta
            tasks = sorted({key.split("/")[0] for key in tensors if "/" in key})
            target = choose_task(tasks, target, selecting)
            if f"{target}/{output}" not in tensors:
                raise InvalidInput(f"{path} has no output {target}/{output} (tasks: {', '.join(tasks)})")
            labels = tensors[f"{target}/labels"]
        elif meta.get("plan_sha256") != meta0.get("plan_sha256") or meta.get("run_id") != meta0.get("run_id"):
            raise InvalidInput(f"{path} belongs to another plan (checksum {str(meta.get('plan_sha256'))[:12]} vs "
                               f"{str(meta0.get('plan_sha256'))[:12]}); estimate one plan at a time")
        elif meta.get("recipe_sha256") != meta0.get("recipe_sha256"):
            raise InvalidInput(f"{path} was trained with another recipe than {files[0]} (checksum "
                               f"{str(meta.get('recipe_sha256'))[:12]} vs {str(meta0.get('recipe_sha256'))[:12]})")
        elif not torch.equal(tensors[f"{target}/labels"], labels):
            raise InvalidInput(f"{path}: target labels differ from {files[0]}")
        if meta.get("job_id") in owners:
            raise InvalidInput(f"{path} and {owners[meta.get('job_id')]} are both job {meta.get('job_id')}: "
                               "each job's result counts once")
        owners[meta.get("job_id")] = path
        masks.append(tensors["mask"])
        outputs.append(tensors[f"{target}/{output}"])
    if not masks:
        raise NoValidResult(f"none of the {len(files)} result files is left to read: all are held out")
    jobs = torch.tensor([job if isinstance(job, int) else row for row, job in enumerate(owners)])
    return FarmResults(torch.stack(masks), torch.stack(outputs).float(), labels,
                       dict(meta0, target=target, job_ids=sorted(owners), set_aside=set_aside), jobs)


ESTIMATE_KEYS = ("run_id", "plan_sha256", "recipe_sha256", "recipe_kind", "target", "unit_names", "granularity",
                 "job_ids")


def estimate_metadata(meta: dict[str, Any], output: str, models: int) -> dict[str, Any]:
    """What an estimate, or its partial sums, records of where its numbers come from (the estimator adds
    its name and regularisation)."""
    return {**{key: meta.get(key) for key in ESTIMATE_KEYS}, "output": output, "num_models": models}


def sum_results(files: list[Path], target: str | None = None, output: str = "softmax_correct", folds: int = 0,
                exclude: set[int] | None = None) -> tuple[InfluenceSums, dict[str, Any]]:
    """The estimator's sums over the result ``files`` — less the held-out jobs (the plan's, and the job ids
    ``exclude``) — with the linear datamodels' in ``folds`` folds when > 0, and the metadata the estimate
    records (``set_aside``: how many results were held out)."""
    results = load_results(files, target, output, keep=lambda meta: not held_out(meta, exclude))
    sums = results.sums(folds)
    return sums, dict(estimate_metadata(results.meta, output, sums.models), set_aside=results.meta["set_aside"])


PARTIAL_KEYS = ("run_id", "plan_sha256", "recipe_sha256", "target", "output")


def merge_partials(paths: list[Path]) -> tuple[InfluenceSums, dict[str, Any]]:
    """The sums of partial estimates of disjoint jobs of one plan, recipe, target and output, and the metadata
    the estimate records; anything else would return wrong numbers, so it is refused."""
    sums, meta, owners, set_aside = None, {}, {}, 0
    for path in paths:
        tensors, this = load_artifact(path)
        if this.get("kind") != "partial" or not isinstance(this.get("job_ids"), list):
            raise InvalidInput(f"{path} is not a partial estimate with its job ids (write one with "
                               "`influence estimate --partial-out`)")
        for key in PARTIAL_KEYS:
            if sums is not None and this.get(key) != meta.get(key):
                raise InvalidInput(f"{path} and {paths[0]} differ in {key} ({this.get(key)!r} vs {meta.get(key)!r}); "
                                   "only partial estimates of one plan, recipe, target and output merge")
        for job in this["job_ids"]:
            if job in owners:
                raise InvalidInput(f"{path} and {owners[job]} both hold job {job}: its models would count twice")
            owners[job] = path
        part = InfluenceSums.from_tensors(tensors)
        if sums is not None and (sums.gram is None) != (part.gram is None):
            raise InvalidInput(f"{path} and {paths[0]} differ in holding the linear datamodels' sums; write every "
                               "partial with the same --estimator")
        sums, meta = (part, this) if sums is None else (sums.merge(part), meta)
        set_aside += int(this.get("set_aside") or 0)
    return sums, dict(estimate_metadata(dict(meta, job_ids=sorted(owners)), meta["output"], sums.models),
                      set_aside=set_aside)


def counterfactual_summary(files: list[Path], target: str | None = None) -> list[dict[str, Any]]:
    """Target accuracy mean ± std (over runs, n − 1) per (order, k) of counterfactual results, on the test
    split unless ``target`` says otherwise: ``influence.counterfactual`` records in (order, k) order."""
    groups: dict[tuple[str, int], list[float]] = {}
    for path in files:
        meta = load_artifact_metadata(path)
        if meta.get("mode") != "counterfactual":
            raise InvalidInput(f"{path} is not a counterfactual result (mode {meta.get('mode')!r})")
        accuracy = meta["target_acc"]
        task = choose_task(sorted(accuracy), target, selecting=False)
        groups.setdefault((meta["order"], int(meta["k"])), []).append(float(accuracy[task]))
    summary = []
    for (order, k), values in sorted(groups.items()):
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        summary.append({"kind": "influence.counterfactual", "order": order, "k": k, "runs": len(values),
                        "acc_mean": mean, "acc_std": std})
    return summary
