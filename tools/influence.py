"""`influence`: which source classes help or hurt a transferred model, from many subset trainings."""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import typer
from confidently.cli import Common, common_options, input_source, run_app, tool_app
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.influence import (
    InfluenceSums,
    JobRunner,
    bootstrap_std,
    counterfactual_plan,
    estimate,
    list_outputs,
    load_recipe,
    result_path,
    subset_plan,
)
from confidently.influence.recipes import VAL
from confidently.io.artifacts import artifact_metadata, load_artifact, load_artifact_metadata, save_artifact
from confidently.io.atomic import claim_folder, guard_output
from confidently.io.records import RecordReader, RecordWriter
from confidently.run import console, progress
from rich.table import Table

app = tool_app("influence", "Which source classes help or hurt a transferred model (many subset trainings).")


def read_jobs(source: str | None, plan: Path | None, job_index: str | None, job_range: str | None) -> list[dict]:
    """Jobs from stdin/a file, or one job of --plan by index (Slurm: --job-index $SLURM_ARRAY_TASK_ID)."""
    path = str(plan) if plan is not None else input_source(source, "influence jobs")
    jobs = [record.data for record in RecordReader(path, validate=False)]
    if job_index is not None or job_range is not None:
        if job_index is not None:
            try:
                wanted = [int(job_index)]
            except ValueError:
                raise UsageError(f"--job-index {job_index!r}: expected an integer") from None
        else:
            low, _, high = job_range.partition(":")
            try:
                wanted = list(range(int(low), int(high)))
            except ValueError:
                raise UsageError(f"--job-range {job_range!r}: expected A:B (B exclusive)") from None
        by_id = {job.get("job_id"): job for job in jobs}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise UsageError(f"job index {missing[0]} is beyond the plan (it has jobs 0..{len(jobs) - 1})")
        jobs = [by_id[i] for i in wanted]
    return jobs


@app.command()
@common_options(uses={"seed"})
def plan(num_units: int = typer.Option(None, "--num-units", min=2, help="K source units (default: the recipe's)."),
         recipe: str = typer.Option(None, "--recipe", help="Take K from this recipe (file or built-in name)."),
         alpha: float = typer.Option(0.5, "--alpha", help="Fraction of units per model (thesis: 0.5)."),
         num_models: int = typer.Option(..., "--num-models", min=2, help="m models (thesis: 7,540)."),
         sampling: str = typer.Option("fixed", "--sampling", help="fixed (exactly round(αK)) or bernoulli."),
         run_id: str = typer.Option("run", "--run-id"),
         *, common: Common) -> None:
    """One job per model: the units it trains on and its seed (JSONL on stdout)."""
    if num_units is None:
        if recipe is None:
            raise UsageError("give --num-units K or --recipe")
        num_units = load_recipe(recipe).num_units
    writer = RecordWriter()
    for job in subset_plan(num_units, num_models, alpha, sampling, common.seed, run_id):
        writer.write(job)


@app.command()
@common_options(uses={"shard", "engine", "address"})
def train(source: str = typer.Argument(None, help="Jobs (JSONL file, or - / stdin)."),
          recipe: str = typer.Option(..., "--recipe", help="Recipe file (TOML/YAML/JSON) or built-in: demo-shapes, "
                                     "synthetic-concepts, oracle-linear."),
          out_dir: Path = typer.Option(..., "--out-dir", help="Results: OUT_DIR/RUN_ID/job-NNNNNN.safetensors."),
          plan_file: Path = typer.Option(None, "--plan", help="Read jobs from this plan (with --job-index)."),
          job_index: str = typer.Option(None, "--job-index", help="Run one job of --plan (e.g. $SLURM_ARRAY_TASK_ID)."),
          job_range: str = typer.Option(None, "--job-range", help="Run jobs A:B of --plan."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Redo jobs whose result exists."),
          force: bool = typer.Option(False, "--force", help="Write into a non-empty --out-dir influence did not make."),
          fail_fast: bool = typer.Option(False, "--fail-fast", help="Exit 1 at the first failed job."),
          workers: int = typer.Option(None, "--workers", min=1, help="Ray: concurrent workers (default: one per "
                                      "cluster CPU)."),
          *, common: Common) -> None:
    """The worker: run jobs (serially, on a Ray cluster with --engine ray, or one per Slurm array task).

    Each job writes one result file atomically; a job whose file exists is skipped, so re-running a
    killed farm finishes only the missing jobs.
    """
    jobs = list(common.shard.select(read_jobs(source, plan_file, job_index, job_range)))
    load_recipe(recipe)  # fail on a bad recipe before starting workers
    claim_folder(out_dir, "influence", force=force)
    engine = common.engine_instance()
    writer = RecordWriter()
    failed = 0
    try:
        results = engine.map_stateful(functools.partial(JobRunner, recipe, str(out_dir), overwrite), jobs,
                                      workers=workers)
        for result in progress(results, len(jobs), "training"):
            writer.write(result)
            if result["status"] == "failed":
                failed += 1
                console.print(f"[red]job {result['job_id']} failed:[/] {result['error']}")
                if fail_fast:
                    break
    finally:
        engine.close()
    if failed and fail_fast:
        raise NoValidResult(f"{failed} job(s) failed")
    console.log(f"{len(jobs) - failed} of {len(jobs)} jobs done ({failed} failed)")


def result_files(source: str | None, results: Path | None) -> list[Path]:
    if results is not None:
        files = sorted(results.rglob("job-*.safetensors"))
    else:
        files = []
        for record in RecordReader(input_source(source, "influence results"), validate=False):
            if record.data.get("kind") != "influence.result":
                raise record.error("expected influence.result records (from `influence train`)", "kind")
            if record.data.get("status") in ("ok", "done-before"):
                files.append(Path(record.data["path"]))
    if not files:
        raise NoValidResult("no result files to read")
    return files


def choose_task(tasks: list[str], wanted: str | None, selecting: bool) -> str:
    """The task to read: given, the only one, or — with a validation split — val for ranking, test for reporting."""
    if wanted is not None:
        if wanted not in tasks:
            raise UsageError(f"--target {wanted!r}: the results hold {', '.join(tasks)}")
        if selecting and not wanted.endswith(VAL) and wanted + VAL in tasks:
            console.print(f"[yellow]warning:[/] ranking on {wanted}'s test set; a counterfactual scored on the same "
                          f"set overstates its gain (use --target {wanted}{VAL})")
        return wanted
    bases = sorted({t.removesuffix(VAL) for t in tasks})
    if len(bases) != 1:
        raise UsageError(f"results hold tasks {', '.join(tasks)}: choose one with --target")
    chosen = bases[0] + VAL if selecting and bases[0] + VAL in tasks else bases[0]
    if chosen not in tasks:
        raise UsageError(f"results hold tasks {', '.join(tasks)}: choose one with --target")
    return chosen


def load_results(files: list[Path], target: str | None, output: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor, dict[str, Any]]:
    """(masks m×K, outputs m×n, labels n, metadata of the first file plus every file's ``job_ids``); masks
    come from the files, never the plan. A job twice, or results of another recipe, would skew the sums."""
    masks, outputs, meta0, labels, task, owners = [], [], None, None, target, {}
    for path in files:
        tensors, meta = load_artifact(path)
        if meta0 is None:
            meta0 = meta
            tasks = sorted({key.split("/")[0] for key in tensors if "/" in key})
            task = choose_task(tasks, task, selecting=True)
            if f"{task}/{output}" not in tensors:
                raise InvalidInput(f"{path} has no output {task}/{output} (tasks: {', '.join(tasks)})")
            labels = tensors[f"{task}/labels"]
        elif meta.get("plan_sha256") != meta0.get("plan_sha256") or meta.get("run_id") != meta0.get("run_id"):
            raise InvalidInput(f"{path} belongs to another plan (checksum {str(meta.get('plan_sha256'))[:12]} vs "
                               f"{str(meta0.get('plan_sha256'))[:12]}); estimate one plan at a time")
        elif meta.get("recipe_sha256") != meta0.get("recipe_sha256"):
            raise InvalidInput(f"{path} was trained with another recipe than {files[0]} (checksum "
                               f"{str(meta.get('recipe_sha256'))[:12]} vs {str(meta0.get('recipe_sha256'))[:12]})")
        elif not torch.equal(tensors[f"{task}/labels"], labels):
            raise InvalidInput(f"{path}: target labels differ from {files[0]}")
        if meta.get("job_id") in owners:
            raise InvalidInput(f"{path} and {owners[meta.get('job_id')]} are both job {meta.get('job_id')}: "
                               "each job's result counts once")
        owners[meta.get("job_id")] = path
        masks.append(tensors["mask"])
        outputs.append(tensors[f"{task}/{output}"])
    meta0 = dict(meta0, target=task, job_ids=sorted(owners))
    return torch.stack(masks), torch.stack(outputs).float(), labels, meta0


PARTIAL_KEYS = ("run_id", "plan_sha256", "recipe_sha256", "target", "output")


def merge_partials(paths: list[Path], output: str | None) -> tuple[InfluenceSums, dict[str, Any]]:
    """Sum partial estimates of disjoint jobs of one plan, recipe, target and output (``output``: the one
    the user asked for, or None); anything else would return wrong numbers, so it is refused."""
    sums, meta, owners = None, {}, {}
    for path in paths:
        tensors, this = load_artifact(path)
        if this.get("kind") != "partial" or not isinstance(this.get("job_ids"), list):
            raise InvalidInput(f"{path} is not a partial estimate with its job ids (write one with "
                               "`influence estimate --partial-out`)")
        if output is not None and this.get("output") != output:
            raise InvalidInput(f"{path} holds sums of output {this.get('output')!r}, not --output {output!r}")
        for key in PARTIAL_KEYS:
            if sums is not None and this.get(key) != meta.get(key):
                raise InvalidInput(f"{path} and {paths[0]} differ in {key} ({this.get(key)!r} vs {meta.get(key)!r}); "
                                   "only partial estimates of one plan, recipe, target and output merge")
        for job in this["job_ids"]:
            if job in owners:
                raise InvalidInput(f"{path} and {owners[job]} both hold job {job}: its models would count twice")
            owners[job] = path
        part = InfluenceSums.from_tensors(tensors)
        sums, meta = (part, this) if sums is None else (sums.merge(part), meta)
    return sums, dict(meta, job_ids=sorted(owners))


@app.command("estimate")
@common_options()
def estimate_command(source: str = typer.Argument(None, help="Result records from `influence train` (or -)."),
                     results: Path = typer.Option(None, "--results", help="Read every result file under this folder."),
                     merge: list[Path] = typer.Option(None, "--merge", help="Partial estimates to merge (repeat)."),
                     target: str = typer.Option(None, "--target", help="Target task (default: the only one)."),
                     output: str = typer.Option("softmax_correct", "--output", help=", ".join(list_outputs())),
                     out: Path = typer.Option(None, "--out", help="influence.safetensors"),
                     partial_out: Path = typer.Option(None, "--partial-out", help="Write mergeable sums only."),
                     force: bool = typer.Option(False, "--force", help="Write over an --out or --partial-out "
                                                "influence did not write."),
                     *, common: Common) -> None:
    """Influence of every unit on every target example (mean with − mean without), ranking on stdout."""
    if output not in list_outputs():
        raise UsageError(f"--output {output!r}: choose {', '.join(list_outputs())}")
    guard_output(out, "influence", force=force)
    guard_output(partial_out, "influence", force=force)
    if merge:
        sums, meta = merge_partials(merge, output if "output" in common.explicit else None)
        output = meta["output"]
    else:
        masks, outputs, labels, meta = load_results(result_files(source, results), target, output)
        sums = InfluenceSums.empty(masks.shape[1], labels).add(masks, outputs)
    info = {k: meta.get(k) for k in ("run_id", "plan_sha256", "recipe_sha256", "recipe_kind", "target", "unit_names",
                                     "granularity", "job_ids")}
    info.update(output=output, estimator="diffmeans", num_models=sums.models)
    if partial_out is not None:
        save_artifact(partial_out, sums.tensors(), artifact_metadata(tool="influence", kind="partial", **info))
        console.log(f"wrote partial sums of {sums.models} models to {partial_out}")
        if out is None:
            return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = estimate(sums)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}")
    if out is not None:
        save_artifact(out, {"influence": result.influence, "stderr": result.stderr, "n_in": result.n_in,
                            "n_out": result.n_out, "overall": result.overall, "per_class": result.per_class,
                            "labels": result.labels},
                      artifact_metadata(tool="influence", kind="influence", config=common.config, **info))
    writer = RecordWriter()
    overall_se = result.stderr.nanmean(1)
    for rank, unit in enumerate(ranked(result.overall, "pos"), start=1):
        names = info.get("unit_names") or []
        writer.write({"kind": "influence.rank", "run_id": info["run_id"], "target": info["target"], "unit": unit,
                      "name": names[unit] if unit < len(names) else str(unit),
                      "overall": round(float(result.overall[unit]), 6),
                      "stderr": round(float(overall_se[unit]), 6), "rank": rank,
                      "n_in": int(result.n_in[unit]), "n_out": int(result.n_out[unit])})


def ranked(values: torch.Tensor, sign: str) -> list[int]:
    """Unit order by value (pos: descending, neg: ascending), NaN last, ties by index."""
    keyed = [(math.inf if math.isnan(v) else (-v if sign == "pos" else v), k) for k, v in enumerate(values.tolist())]
    return [k for _, k in sorted(keyed)]


def load_influence(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = load_artifact(path)
    if "influence" not in tensors or "overall" not in tensors:
        raise InvalidInput(f"{path} is not an influence file (write one with `influence estimate --out`)")
    return tensors, meta


@app.command()
@common_options()
def top(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
        by: str = typer.Option("overall", "--by", help="overall, class:C (target label C) or target:J (example J)."),
        sign: str = typer.Option("pos", "--sign", help="pos (most helpful) or neg (most harmful)."),
        k: int = typer.Option(10, "--k", min=1),
        *, common: Common) -> None:
    """The k most helpful (or harmful) source units overall, for one target class, or for one example."""
    tensors, meta = load_influence(influence_path)
    if sign not in ("pos", "neg"):
        raise UsageError(f"--sign {sign!r}: choose pos or neg")
    kind, _, value = by.partition(":")
    try:
        if kind == "overall":
            values = tensors["overall"]
        elif kind == "class":
            values = tensors["per_class"][:, int(value)]
        elif kind == "target":
            values = tensors["influence"][:, int(value)]
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"--by {by!r}: expected overall, class:C (0..{tensors['per_class'].shape[1] - 1}) or "
                         f"target:J (0..{tensors['influence'].shape[1] - 1})") from None
    writer = RecordWriter()
    for rank, unit in enumerate(ranked(values, sign)[:k], start=1):
        writer.write({"kind": "influence.rank", "run_id": meta.get("run_id"), "by": by, "sign": sign, "unit": unit,
                      "value": round(float(values[unit]), 6), "rank": rank})


@app.command()
@common_options()
def subpop(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
           unit: int = typer.Option(..., "--source", help="Source unit index."),
           k: int = typer.Option(8, "--k", min=1),
           sign: str = typer.Option("pos", "--sign"),
           *, common: Common) -> None:
    """The target examples a source unit drives most (thesis Fig 8.4: "ostrich" → ostrich-like birds)."""
    tensors, _ = load_influence(influence_path)
    if not 0 <= unit < tensors["influence"].shape[0]:
        raise UsageError(f"--source {unit}: units are 0..{tensors['influence'].shape[0] - 1}")
    row = tensors["influence"][unit]
    writer = RecordWriter()
    for target in ranked(row, sign)[:k]:
        writer.write({"kind": "influence.subpop", "unit": unit, "target_index": target,
                      "label": int(tensors["labels"][target]), "influence": round(float(row[target]), 6)})


@app.command()
@common_options()
def explain(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
            target: int = typer.Option(..., "--target", help="Target example index."),
            k: int = typer.Option(5, "--k", min=1),
            *, common: Common) -> None:
    """The source units that push one target example down (and up) most: candidates for its mistakes."""
    tensors, _ = load_influence(influence_path)
    if not 0 <= target < tensors["influence"].shape[1]:
        raise UsageError(f"--target {target}: examples are 0..{tensors['influence'].shape[1] - 1}")
    column = tensors["influence"][:, target]
    sys.stdout.write(json.dumps({
        "kind": "influence.explain", "target_index": target, "label": int(tensors["labels"][target]),
        "negative": [{"unit": u, "influence": round(float(column[u]), 6)} for u in ranked(column, "neg")[:k]],
        "positive": [{"unit": u, "influence": round(float(column[u]), 6)} for u in ranked(column, "pos")[:k]],
    }) + "\n")


@app.command()
@common_options()
def leakage(influence_path: Path = typer.Argument(..., help="influence.safetensors of example-granularity units."),
            k: int = typer.Option(5, "--k", min=1),
            *, common: Common) -> None:
    """Per target example, the source units that help it most (near-duplicates: leakage), and overall the
    most harmful source units (mislabelled, ambiguous or misleading images). One record per target."""
    tensors, meta = load_influence(influence_path)
    influence = tensors["influence"]
    names = json.loads(meta["unit_names"]) if isinstance(meta.get("unit_names"), str) else meta.get("unit_names")
    if influence.shape[0] < 10 * influence.shape[1] and meta.get("granularity") == "class":
        console.print("[yellow]note:[/] these units are classes; leakage is meant for example-granularity influences")

    def unit(u: int) -> dict[str, Any]:
        return {"unit": u, "name": names[u] if names else str(u)}

    writer = RecordWriter()
    for target in range(influence.shape[1]):
        column = influence[:, target]
        writer.write({"kind": "influence.leakage", "target_index": target, "label": int(tensors["labels"][target]),
                      "top_positive": [{**unit(u), "influence": round(float(column[u]), 6)}
                                       for u in ranked(column, "pos")[:k]]})
    writer.write({"kind": "influence.leakage", "scope": "overall",
                  "most_negative": [{**unit(u), "influence": round(float(tensors["overall"][u]), 6)}
                                    for u in ranked(tensors["overall"], "neg")[:k]]})


def parse_ks(text: str) -> list[int]:
    """``0,1,2,4`` or ``0:950:50`` (start:stop:step, stop inclusive)."""
    try:
        if ":" in text:
            start, stop, step = (int(v) for v in text.split(":"))
            return list(range(start, stop + 1, step))
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--ks {text!r}: expected 0,1,2,4 or START:STOP:STEP") from None


@app.command()
@common_options(uses={"seed"})
def counterfactual(influence_path: Path = typer.Option(..., "--influence", help="influence.safetensors (or any "
                                                       "file with an 'overall' ranking: influences transfer)."),
                   orders: str = typer.Option("bottom,top,random", "--order"),
                   ks: str = typer.Option("0,1,2,4", "--ks"),
                   runs: int = typer.Option(3, "--runs", min=1),
                   run_id: str = typer.Option("counterfactual", "--run-id"),
                   *, common: Common) -> None:
    """Jobs that retrain without the k most harmful (bottom), most helpful (top) or random units.

    Rank on a validation split, report on the test set: selecting and scoring on one set inflates the gain.
    """
    tensors, _ = load_influence(influence_path)
    unknown = int(tensors["overall"].isnan().sum())
    if unknown:
        console.print(f"[yellow]warning:[/] {unknown} units have a NaN influence (in every model or in none): "
                      "ranked last for both bottom and top")
    writer = RecordWriter()
    for job in counterfactual_plan(tensors["overall"], [o.strip() for o in orders.split(",") if o.strip()],
                                   parse_ks(ks), runs, common.seed, run_id):
        writer.write(job)


@app.command()
@common_options()
def summarize(source: str = typer.Argument(None, help="Result records of counterfactual jobs (or -)."),
              results: Path = typer.Option(None, "--results", help="Read every result file under this folder."),
              target: str = typer.Option(None, "--target"),
              *, common: Common) -> None:
    """Target accuracy mean ± std per (order, k) of counterfactual runs; JSON lines on stdout."""
    groups: dict[tuple[str, int], list[float]] = {}
    for path in result_files(source, results):
        meta = load_artifact_metadata(path)
        if meta.get("mode") != "counterfactual":
            raise InvalidInput(f"{path} is not a counterfactual result (mode {meta.get('mode')!r})")
        accuracy = meta["target_acc"]
        task = choose_task(sorted(accuracy), target, selecting=False)
        groups.setdefault((meta["order"], int(meta["k"])), []).append(float(accuracy[task]))
    writer = RecordWriter()
    table = Table("order", "k", "runs", "target accuracy", title="counterfactual")
    for (order, k), values in sorted(groups.items()):
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        writer.write({"kind": "influence.counterfactual", "order": order, "k": k, "runs": len(values),
                      "acc_mean": mean, "acc_std": std})
        table.add_row(order, str(k), str(len(values)), f"{mean:.3f} ± {std:.3f}")
    console.print(table)


@app.command()
@common_options(uses={"seed"})
def convergence(source: str = typer.Argument(None, help="Result records (or -)."),
                results: Path = typer.Option(None, "--results"),
                target: str = typer.Option(None, "--target"),
                output: str = typer.Option("softmax_correct", "--output"),
                m_grid: str = typer.Option(None, "--m-grid", help="Model counts, e.g. 50,100,200 (default: halvings)."),
                bootstrap: int = typer.Option(100, "--bootstrap", min=2, help="Resamples per m (thesis: 500)."),
                *, common: Common) -> None:
    """Bootstrap spread of overall influence as the number of models grows (it should shrink ~1/√m)."""
    masks, outputs, labels, _ = load_results(result_files(source, results), target, output)
    total = len(masks)
    grid = [int(v) for v in m_grid.split(",")] if m_grid else sorted({max(2, total // 4), max(2, total // 2), total})
    if any(m < 2 or m > total for m in grid):
        raise UsageError(f"--m-grid values must lie in 2..{total} (the number of result files)")
    writer = RecordWriter()
    generator = torch.Generator().manual_seed(common.seed)
    for m in grid:
        spread = bootstrap_std(masks[:m], outputs[:m], labels, bootstrap, generator)
        writer.write({"kind": "influence.diag", "metric": "bootstrap_std", "models": m, "resamples": bootstrap,
                      "mean_std": float(spread.nanmean()), "max_std": float(spread[~spread.isnan()].max())})


@app.command()
@common_options()
def status(plan_file: Path = typer.Option(..., "--plan"), out_dir: Path = typer.Option(..., "--out-dir"),
           *, common: Common) -> None:
    """Done and missing jobs of a plan; the missing ones as a Slurm array spec to resubmit."""
    jobs = read_jobs(None, plan_file, None, None)
    missing = [job["job_id"] for job in jobs if not result_path(out_dir, job).exists()]
    sys.stdout.write(json.dumps({"kind": "influence.status", "jobs": len(jobs), "done": len(jobs) - len(missing),
                                 "missing": len(missing), "array": compress(missing)}) + "\n")


def compress(ids: list[int]) -> str:
    """[0,1,2,5,7,8] → "0-2,5,7-8" (a Slurm --array spec)."""
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


@app.command("slurm-script")
@common_options()
def slurm_script(plan_file: Path = typer.Option(..., "--plan"), recipe: str = typer.Option(..., "--recipe"),
                 out_dir: Path = typer.Option(..., "--out-dir"),
                 concurrency: int = typer.Option(64, "--concurrency", min=1),
                 gpus_per_task: int = typer.Option(1, "--gpus-per-task", min=0),
                 cpus_per_task: int = typer.Option(1, "--cpus-per-task", min=1,
                                                   help="CPUs per task; the worker runs that many torch threads."),
                 log_dir: Path = typer.Option(Path("logs"), "--log-dir",
                                              help="Folder for the tasks' logs, created now (Slurm will not)."),
                 time_limit: str = typer.Option("01:00:00", "--time"),
                 partition: str = typer.Option(None, "--partition"),
                 array: str = typer.Option(None, "--array", help="Job ids (default: the whole plan)."),
                 *, common: Common) -> None:
    """An sbatch job-array file whose tasks each run one job of the plan (`influence train --job-index`)."""
    jobs = read_jobs(None, plan_file, None, None)
    spec = array or f"0-{len(jobs) - 1}"
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch opens --output before the script runs
    lines = ["#!/bin/bash", f"#SBATCH --job-name=influence-{jobs[0].get('run_id', 'run')}",
             f"#SBATCH --array={spec}%{concurrency}", f"#SBATCH --time={time_limit}",
             f"#SBATCH --cpus-per-task={cpus_per_task}", f"#SBATCH --output={log_dir.resolve()}/influence-%A_%a.out"]
    if gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["set -euo pipefail", "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK",
              f"influence train --plan {plan_file.resolve()} --job-index $SLURM_ARRAY_TASK_ID "
              f"--recipe {recipe} --out-dir {out_dir.resolve()}"]
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    run_app(app, "influence")


if __name__ == "__main__":
    main()
