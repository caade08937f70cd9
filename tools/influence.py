"""`influence`: which source classes help or hurt a transferred model, from many subset trainings."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import typer
from confidently.cli import Common, common_options, examples, input_source, run_app, tool_app
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.influence.outputs import list_outputs
from confidently.io.atomic import claim_folder, guard_output
from confidently.io.records import RecordReader, RecordWriter
from confidently.run.console import console, progress
from rich.table import Table

# The commands import the library's heavy modules (torch) themselves, so --help and usage errors start fast.

app = tool_app("influence", "Which source classes help or hurt a transferred model (many subset trainings).")


def read_jobs(source: str | None, plan: Path | None, job_index: str | None = None,
              job_range: str | None = None) -> list[dict]:
    """Jobs from stdin/a file, or one job of --plan by index (Slurm: --job-index $SLURM_ARRAY_TASK_ID)."""
    from confidently.influence.plan import select_jobs

    path = str(plan) if plan is not None else input_source(source, "influence jobs")
    return select_jobs([record.data for record in RecordReader(path, validate=False)], job_index, job_range)


def read_result_files(source: str | None, results: Path | None) -> list[Path]:
    """Every result file under --results, else the files the result records of SOURCE (or stdin) name."""
    from confidently.influence.results import result_files

    if results is not None:
        return result_files(folder=results)
    return result_files(RecordReader(input_source(source, "influence results"), validate=False))


@app.command(epilog=examples(r"""
    # one job per model: 40 models, each on a random half of the oracle's 20 units, and 10 held out to score estimates
    influence plan --recipe oracle-linear --num-models 40 --holdout 10 --run-id oracle > plan.jsonl
    # a whole small farm in one pipe: plan | train | estimate, the units' ranking on stdout
    influence plan --recipe oracle-linear --num-models 8 --run-id quick \
      | influence train --recipe oracle-linear --out-dir quick | influence estimate > quick-ranking.jsonl
    # K given directly; each unit in a model with probability 0.3 (not exactly round(0.3·K) units)
    influence plan --num-units 12 --num-models 6 --alpha 0.3 --sampling bernoulli --seed 1 | head -2
"""))
@common_options(uses={"seed"})
def plan(num_units: int = typer.Option(None, "--num-units", min=2, help="K source units (default: the recipe's)."),
         recipe: str = typer.Option(None, "--recipe", help="Take K from this recipe (file or built-in name)."),
         alpha: float = typer.Option(0.5, "--alpha", help="Fraction of units per model (thesis: 0.5)."),
         num_models: int = typer.Option(..., "--num-models", min=2, help="m models (thesis: 7,540)."),
         holdout: int = typer.Option(0, "--holdout", min=0, help="N more jobs marked held out: trained like the "
                                     "others, never estimated on; `influence lds` scores estimates on them."),
         sampling: str = typer.Option("fixed", "--sampling", help="fixed (exactly round(αK)) or bernoulli."),
         run_id: str = typer.Option("run", "--run-id"),
         *, common: Common) -> None:
    """One job per model: the units it trains on and its seed (JSONL on stdout); --holdout N adds N held-out
    jobs (job ids from --num-models on, "holdout": true) to score estimates with `influence lds`."""
    from confidently.influence.plan import subset_plan
    from confidently.influence.recipes import load_recipe

    if num_units is None and recipe is None:
        raise UsageError("give --num-units K or --recipe")
    loaded = load_recipe(recipe) if recipe is not None else None
    num_units = loaded.num_units if num_units is None else num_units
    granularity = getattr(loaded, "granularity", "class")  # an image recipe's units may be single examples
    RecordWriter().write_all(subset_plan(num_units, num_models, alpha, sampling, common.seed, run_id, granularity,
                                         holdout))


@app.command(epilog=examples(r"""
    # the farm, serially: one result file per job under results/, one record per job on stdout
    influence train plan.jsonl --recipe oracle-linear --out-dir results > done.jsonl
    # what one Slurm array task runs: job 7 of the plan (its result exists, so it is skipped: done-before)
    influence train --plan plan.jsonl --job-index 7 --recipe oracle-linear --out-dir results
"""))
@common_options(uses={"device", "shard", "engine", "address"})
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
    killed farm finishes only the missing jobs. Recipes train and predict on --device, resolved in each
    worker (with --engine ray, auto finds the GPU --gpus-per-worker gave it); records and result files
    name the device each job ran on.
    """
    from confidently.influence.recipes import load_recipe
    from confidently.influence.worker import JobRunner

    jobs = list(common.shard.select(read_jobs(source, plan_file, job_index, job_range)))
    load_recipe(recipe)  # fail on a bad recipe before starting workers
    if common.engine == "serial":
        from confidently.run.device import resolve_device

        resolve_device(common.device)  # a device this machine lacks, before any work (Ray workers resolve theirs)
    claim_folder(out_dir, "influence", force=force)
    engine = common.engine_instance()
    writer = RecordWriter()
    failed = 0
    try:
        results = engine.map_stateful(functools.partial(JobRunner, recipe, str(out_dir), overwrite, common.device),
                                      jobs, workers=workers)
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


@app.command("estimate", epilog=examples(r"""
    # every unit's influence on every target example (+ standard errors) to a file, the ranking on stdout
    influence estimate --results results --out influence.safetensors > ranking.jsonl
    # a linear datamodel (ridge, penalty chosen per target by 5-fold error) from mergeable sums of two halves
    head -20 done.jsonl | influence estimate --estimator ridge --partial-out part-a.safetensors
    tail -n +21 done.jsonl | influence estimate --estimator ridge --partial-out part-b.safetensors
    influence estimate --merge part-a.safetensors --merge part-b.safetensors --estimator ridge \
      --out ridge.safetensors > ridge-ranking.jsonl
"""))
@common_options()
def estimate_command(source: str = typer.Argument(None, help="Result records from `influence train` (or -)."),
                     results: Path = typer.Option(None, "--results", help="Read every result file under this folder."),
                     merge: list[Path] = typer.Option(None, "--merge", help="Partial estimates to merge (repeat)."),
                     target: str = typer.Option(None, "--target", help="Target task (default: the only one)."),
                     output: str = typer.Option("softmax_correct", "--output", help=", ".join(list_outputs())),
                     estimator: str = typer.Option("diff-means", "--estimator", help="diff-means (the thesis's "
                                                   "mean with − mean without), or a linear datamodel: ridge or "
                                                   "lasso (regression of the outputs on the masks)."),
                     penalty: float = typer.Option(None, "--penalty", min=0, help="ridge/lasso: this penalty "
                                                   "(default: chosen by cross-validated error over a log grid)."),
                     penalty_scope: str = typer.Option("per-target", "--penalty-scope", help="ridge/lasso: per-target "
                                                       "(each its own penalty) or global (one for all targets)."),
                     folds: int = typer.Option(5, "--folds", min=2, help="ridge/lasso: cross-validation folds "
                                               "(a job's fold: its id mod folds)."),
                     holdout_jobs: str = typer.Option(None, "--holdout-jobs", help="Also set these job ids aside "
                                                      "(e.g. 30-39,45) for `influence lds`; the plan's --holdout "
                                                      "jobs always are."),
                     out: Path = typer.Option(None, "--out", help="influence.safetensors"),
                     partial_out: Path = typer.Option(None, "--partial-out", help="Write mergeable sums only."),
                     force: bool = typer.Option(False, "--force", help="Write over an --out or --partial-out "
                                                "influence did not write."),
                     *, common: Common) -> None:
    """Influence of every unit on every target example, ranking on stdout.

    The difference of means (default), or a linear datamodel (ridge, lasso) whose penalty is chosen by
    cross-validation; the file has the same tensors whatever the estimator (plus the linear model's intercept),
    and its metadata names the estimator and the penalty chosen. Jobs the plan held out are never used.
    """
    from confidently.influence.estimators import estimate_influence, needs_gram
    from confidently.influence.plan import parse_job_ids
    from confidently.influence.queries import overall_ranking
    from confidently.influence.results import merge_partials, sum_results
    from confidently.io.artifacts import artifact_metadata, save_artifact

    if output not in list_outputs():
        raise UsageError(f"--output {output!r}: choose {', '.join(list_outputs())}")
    linear = needs_gram(estimator)
    if not linear and {"penalty", "penalty_scope"} & common.explicit:
        raise UsageError(f"--penalty and --penalty-scope choose a ridge or lasso penalty; {estimator} has none")
    exclude = parse_job_ids(holdout_jobs) if holdout_jobs is not None else None
    if holdout_jobs is not None and exclude is None:
        raise UsageError("--holdout-jobs all would leave nothing to estimate on: name job ids, e.g. 30-39")
    guard_output(out, "influence", force=force)
    guard_output(partial_out, "influence", force=force)
    if merge:
        if holdout_jobs is not None:
            raise UsageError("--holdout-jobs picks among result files; partial estimates already chose their jobs")
        sums, info = merge_partials(merge)
        if "output" in common.explicit and info["output"] != output:
            raise InvalidInput(f"{merge[0]} holds sums of output {info['output']!r}, not --output {output!r}")
        if linear and sums.gram is None:
            raise UsageError(f"the partial estimates hold no sums for {estimator}: write them with --estimator "
                             f"{estimator} --partial-out")
    else:
        sums, info = sum_results(read_result_files(source, results), target, output, folds if linear else 0,
                                 exclude)
        if info["set_aside"]:
            console.log(f"set aside {info['set_aside']} held-out results (`influence lds` scores on them)")
    if partial_out is not None:
        save_artifact(partial_out, sums.tensors(), artifact_metadata(
            tool="influence", kind="partial", folds=sums.gram.folds if sums.gram is not None else 0, **info))
        console.log(f"wrote partial sums of {sums.models} models to {partial_out}")
        if out is None:
            return
    options = {"penalty": penalty, "scope": penalty_scope} if linear else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = estimate_influence(sums, estimator, **options)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {warning.message}")
    info.update(result.details)
    chosen = result.details.get("regularisation", {}).get("chosen")
    if isinstance(chosen, dict):
        console.log(f"{estimator} penalty per target by {result.details['regularisation']['chosen_by']}: median "
                    f"{chosen['median']:.3g} ({chosen['min']:.3g} to {chosen['max']:.3g})")
    elif chosen is not None:
        console.log(f"{estimator} penalty: {chosen:.3g} ({result.details['regularisation']['chosen_by']})")
    if out is not None:
        save_artifact(out, result.tensors(), artifact_metadata(tool="influence", kind="influence",
                                                               config=common.config, **info))
    RecordWriter().write_all(overall_ranking(result, info))


@app.command("lds", epilog=examples(r"""
    # how well each estimate predicts the plan's 10 held-out models: Spearman per target example, the mean last
    influence lds influence.safetensors ridge.safetensors --results results > lds.jsonl
    # a separate evaluation farm (another plan, same recipe), every model of it held out; the means only
    influence plan --recipe oracle-linear --num-models 12 --run-id eval --seed 1 \
      | influence train --recipe oracle-linear --out-dir eval > /dev/null
    influence lds influence.safetensors ridge.safetensors --results eval --holdout-jobs all --mean-only
"""))
@common_options()
def lds(influence_paths: list[Path] = typer.Argument(..., help="influence.safetensors files (any estimator)."),
        results: Path = typer.Option(None, "--results", help="Read the result files under this folder (default: "
                                     "result records on stdin)."),
        holdout_jobs: str = typer.Option(None, "--holdout-jobs", help="Which results are held out: job ids "
                                         "(40-49,55, as `influence status` prints them) or all (a separate "
                                         "evaluation farm); default: the plan's --holdout jobs."),
        per_target: bool = typer.Option(True, "--per-target/--mean-only", help="A record per target example, "
                                        "or only each estimate's mean."),
        *, common: Common) -> None:
    """Linear datamodeling score: how well each estimate, as a linear model (intercept + mask · influence),
    predicts held-out models' outputs — Spearman correlation across them, per target example, and its mean.

    Held-out models are never in an estimate: jobs of `influence plan --holdout N`, job ids the estimate set
    aside (`influence estimate --holdout-jobs`), or a separate evaluation farm trained with the same recipe.
    """
    from confidently.influence.lds import lds_records, load_holdout
    from confidently.influence.plan import parse_job_ids
    from confidently.influence.queries import load_influence

    files = read_result_files(None, results)
    jobs = "marked" if holdout_jobs is None else parse_job_ids(holdout_jobs)
    writer = RecordWriter()
    table = Table("estimate", "estimator", "LDS (mean ± std)", "targets", "held-out models", title="LDS")
    for path in influence_paths:
        tensors, meta = load_influence(path)
        holdout = load_holdout(files, meta, jobs)
        for record in lds_records(tensors, meta, holdout, str(path), per_target):
            writer.write(record)
        mean = record
        score = "undefined" if mean["lds"] is None else f"{mean['lds']:.3f} ± {mean['lds_std'] or 0:.3f}"
        table.add_row(str(path), str(meta.get("estimator") or "diff-means"), score, str(mean["targets"]),
                      str(mean["holdout_models"]))
    console.print(table)


@app.command(epilog=examples(r"""
    # the 5 most helpful source units overall, then the 3 most harmful
    influence top influence.safetensors --k 5
    influence top influence.safetensors --sign neg --k 3
    # the units that help target example 4 most
    influence top influence.safetensors --by target:4 --k 3
"""))
@common_options()
def top(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
        by: str = typer.Option("overall", "--by", help="overall, class:C (target label C) or target:J (example J)."),
        sign: str = typer.Option("pos", "--sign", help="pos (most helpful) or neg (most harmful)."),
        k: int = typer.Option(10, "--k", min=1),
        *, common: Common) -> None:
    """The k most helpful (or harmful) source units overall, for one target class, or for one example."""
    from confidently.influence.queries import load_influence, top_units

    tensors, meta = load_influence(influence_path)
    RecordWriter().write_all(top_units(tensors, meta, by, sign, k))


@app.command(epilog=examples(r"""
    # the 5 target examples unit 3 (the oracle's planted helper) lifts most
    influence subpop influence.safetensors --source 3 --k 5
    # and the 5 that unit 7 (its planted harmful unit) pushes down most
    influence subpop influence.safetensors --source 7 --sign neg --k 5
"""))
@common_options()
def subpop(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
           unit: int = typer.Option(..., "--source", help="Source unit index."),
           k: int = typer.Option(8, "--k", min=1),
           sign: str = typer.Option("pos", "--sign"),
           *, common: Common) -> None:
    """The target examples a source unit drives most (thesis Fig 8.4: "ostrich" → ostrich-like birds)."""
    from confidently.influence.queries import driven_targets, load_influence

    tensors, _ = load_influence(influence_path)
    RecordWriter().write_all(driven_targets(tensors, unit, sign, k))


@app.command(epilog=examples(r"""
    # the source units that push target example 4 down (candidates for its mistakes) and up, 5 each
    influence explain influence.safetensors --target 4
    # the top 2 each way for example 0, kept in a file
    influence explain influence.safetensors --target 0 --k 2 > explain-0.json
"""))
@common_options()
def explain(influence_path: Path = typer.Argument(..., help="influence.safetensors"),
            target: int = typer.Option(..., "--target", help="Target example index."),
            k: int = typer.Option(5, "--k", min=1),
            *, common: Common) -> None:
    """The source units that push one target example down (and up) most: candidates for its mistakes."""
    from confidently.influence.queries import explain_target, load_influence

    tensors, _ = load_influence(influence_path)
    sys.stdout.write(json.dumps(explain_target(tensors, target, k)) + "\n")


@app.command(epilog=examples(r"""
    # per target example, the 3 units that help it most (near-duplicates, when units are source images)
    influence leakage influence.safetensors --k 3 > leakage.jsonl
    # the last record: the most harmful units overall (mislabelled or misleading images)
    influence leakage influence.safetensors --k 3 | tail -1
"""))
@common_options()
def leakage(influence_path: Path = typer.Argument(..., help="influence.safetensors of example-granularity units."),
            k: int = typer.Option(5, "--k", min=1),
            *, common: Common) -> None:
    """Per target example, the source units that help it most (near-duplicates: leakage), and overall the
    most harmful source units (mislabelled, ambiguous or misleading images). One record per target."""
    from confidently.influence.queries import leakage_candidates, load_influence

    RecordWriter().write_all(leakage_candidates(*load_influence(influence_path), k))


def parse_ks(text: str) -> list[int]:
    """``0,1,2,4`` or ``0:950:50`` (start:stop:step, stop inclusive)."""
    try:
        if ":" in text:
            start, stop, step = (int(v) for v in text.split(":"))
            return list(range(start, stop + 1, step))
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--ks {text!r}: expected 0,1,2,4 or START:STOP:STEP") from None


@app.command(epilog=examples(r"""
    # jobs without the 1, 2 or 4 most harmful (bottom), most helpful (top) or random units, 2 runs each
    influence counterfactual --influence influence.safetensors --ks 0,1,2,4 --runs 2 > cf-plan.jsonl
    influence train cf-plan.jsonl --recipe oracle-linear --out-dir cf > cf-done.jsonl
    # only the most harmful units, k = 0, 2, 4, 6, 8, trained and summarized in one pipe
    influence counterfactual --influence influence.safetensors --order bottom --ks 0:8:2 --runs 1 \
      --run-id cf-bottom | influence train --recipe oracle-linear --out-dir cf-bottom | influence summarize
"""))
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
    from confidently.influence.plan import counterfactual_plan
    from confidently.influence.queries import load_influence

    tensors, _ = load_influence(influence_path)
    unknown = int(tensors["overall"].isnan().sum())
    if unknown:
        console.print(f"[yellow]warning:[/] {unknown} units have a NaN influence (in every model or in none): "
                      "ranked last for both bottom and top")
    orders_given = [o.strip() for o in orders.split(",") if o.strip()]
    RecordWriter().write_all(counterfactual_plan(tensors["overall"], orders_given, parse_ks(ks), runs, common.seed,
                                                 run_id))


@app.command(epilog=examples(r"""
    # target accuracy mean ± std per (order, k), from the result files under cf/
    influence summarize --results cf > cf-summary.jsonl
    # the same from the training's result records
    influence summarize cf-done.jsonl
"""))
@common_options()
def summarize(source: str = typer.Argument(None, help="Result records of counterfactual jobs (or -)."),
              results: Path = typer.Option(None, "--results", help="Read every result file under this folder."),
              target: str = typer.Option(None, "--target"),
              *, common: Common) -> None:
    """Target accuracy mean ± std per (order, k) of counterfactual runs; JSON lines on stdout."""
    from confidently.influence.results import counterfactual_summary

    writer = RecordWriter()
    table = Table("order", "k", "runs", "target accuracy", title="counterfactual")
    for row in counterfactual_summary(read_result_files(source, results), target):
        writer.write(row)
        table.add_row(row["order"], str(row["k"]), str(row["runs"]), f"{row['acc_mean']:.3f} ± {row['acc_std']:.3f}")
    console.print(table)


@app.command(epilog=examples(r"""
    # does the estimate settle? the bootstrap spread of overall influence at 10, 20, 30 and 40 models
    influence convergence --results results --m-grid 10,20,30,40 --bootstrap 50 > convergence.jsonl
    # at halvings of all the models (40, 20, 10), from the result records
    influence convergence done.jsonl --bootstrap 20
"""))
@common_options(uses={"seed"})
def convergence(source: str = typer.Argument(None, help="Result records (or -)."),
                results: Path = typer.Option(None, "--results"),
                target: str = typer.Option(None, "--target"),
                output: str = typer.Option("softmax_correct", "--output"),
                m_grid: str = typer.Option(None, "--m-grid", help="Model counts, e.g. 50,100,200 (default: halvings)."),
                bootstrap: int = typer.Option(100, "--bootstrap", min=2, help="Resamples per m (thesis: 500)."),
                *, common: Common) -> None:
    """Bootstrap spread of overall influence as the number of models grows (it should shrink ~1/√m)."""
    from confidently.influence.estimate import bootstrap_convergence
    from confidently.influence.results import load_results

    found = load_results(read_result_files(source, results), target, output)
    grid = [int(v) for v in m_grid.split(",")] if m_grid else None
    RecordWriter().write_all(bootstrap_convergence(found.masks, found.outputs, found.labels, grid, bootstrap,
                                                   common.seed))


@app.command(epilog=examples(r"""
    # a farm stopped halfway: jobs 0-5 of 12 done; status lists the missing ones as a Slurm --array spec
    influence plan --recipe oracle-linear --num-models 12 --run-id half > half.jsonl
    influence train --plan half.jsonl --job-range 0:6 --recipe oracle-linear --out-dir half > /dev/null
    influence status --plan half.jsonl --out-dir half
    # the full farm: every job done
    influence status --plan plan.jsonl --out-dir results
"""))
@common_options()
def status(plan_file: Path = typer.Option(..., "--plan"), out_dir: Path = typer.Option(..., "--out-dir"),
           *, common: Common) -> None:
    """Done and missing jobs of a plan; the missing ones as a Slurm array spec to resubmit."""
    from confidently.influence.slurm import farm_status

    sys.stdout.write(json.dumps(farm_status(read_jobs(None, plan_file), out_dir)) + "\n")


@app.command("slurm-script", epilog=examples(r"""
    # an sbatch job-array file: one task per job of the plan, at most 8 at a time, CPU only, logs in logs/
    influence slurm-script --plan plan.jsonl --recipe oracle-linear --out-dir results --concurrency 8 \
      --gpus-per-task 0 > farm.sbatch
    # resubmit only the missing jobs of the stopped farm (`sbatch rest.sbatch` on the cluster)
    influence slurm-script --plan half.jsonl --recipe oracle-linear --out-dir half --array 6-11 > rest.sbatch
"""))
@common_options()
def slurm_script(plan_file: Path = typer.Option(..., "--plan"), recipe: str = typer.Option(..., "--recipe"),
                 out_dir: Path = typer.Option(..., "--out-dir"),
                 concurrency: int = typer.Option(64, "--concurrency", min=1),
                 gpus_per_task: int = typer.Option(1, "--gpus-per-task", min=0,
                                                   help="GPUs per task: the worker trains on its GPU (--device "
                                                   "auto); 0 asks for none and trains on the CPU."),
                 cpus_per_task: int = typer.Option(1, "--cpus-per-task", min=1,
                                                   help="CPUs per task; the worker runs that many torch threads."),
                 log_dir: Path = typer.Option(Path("logs"), "--log-dir",
                                              help="Folder for the tasks' logs, created now (Slurm will not)."),
                 time_limit: str = typer.Option("01:00:00", "--time"),
                 partition: str = typer.Option(None, "--partition"),
                 array: str = typer.Option(None, "--array", help="Job ids (default: the whole plan)."),
                 *, common: Common) -> None:
    """An sbatch job-array file whose tasks each run one job of the plan (`influence train --job-index`)."""
    from confidently.influence.slurm import sbatch_script

    jobs = read_jobs(None, plan_file)
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch opens --output before the script runs
    sys.stdout.write(sbatch_script(jobs, plan_file, recipe, out_dir, concurrency=concurrency,
                                   gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, log_dir=log_dir,
                                   time_limit=time_limit, partition=partition, array=array))


def main() -> None:
    run_app(app, "influence")


if __name__ == "__main__":
    main()
