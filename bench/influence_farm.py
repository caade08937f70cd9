"""Farm speed: models/hour of ``influence train`` against a bare loop, Ray with 2 workers against 1, estimator share.

* models per hour of ``influence train PLAN --recipe R --out-dir DIR`` (serial engine, a subprocess, its
  JSONL records to a file) on a plan of ``--num-models`` jobs from ``influence plan``, against a bare
  in-process loop calling the same training function on the same jobs: ``load_recipe(R)``, then
  ``recipe.run(job["include"], job["train_seed"])`` per job, the outputs kept in memory (no files).
  Ratio ours/bare (goal >= 0.9×), as measured and with the CLI start-up subtracted: the start-up
  (``influence --help``) is timed in the same rounds and printed. The first job of a fresh process pays
  torch's warm-up (first autograd/Adam step) inside the farm time; the result records' per-job seconds
  show it, and Σ job seconds splits the farm time into training and the rest (plan, checks, writes).
* ``influence train --engine ray --address A`` with 2 workers against 1 (goal >= 1.7× on 2 cores). The
  CLI has no option for the number of workers: ``map_stateful`` starts one actor per cluster CPU (each
  asking ``num_cpus=1``), so the count is set by the cluster: a private local Ray cluster of
  ``ray.init(num_cpus=N)`` in a helper process (bound to 127.0.0.1, its own temp dir), started before
  and shut down after each run, and joined with ``--address`` (the join, the actors' start-up with
  their imports and the jobs are in the time; the cluster's start and stop are printed apart). Also the
  plain ``influence train --engine ray`` as a user runs it: a private cluster of every CPU Ray detects,
  its start-up included, against the serial engine. On a shared 2-core machine the 2-worker runs
  compete with Ray's own daemons and with other work: the load average is printed, and per row the
  median seconds of one job (``recipe.run`` and the outputs, from the result records; the bare loop
  times its calls), their sum, and ``busy`` = Σ job s / seconds, the mean number of jobs training at
  once (near 2 with 2 workers on two free cores; near 1 when the cores are taken by other work). Ray
  joins with ``RAY_AUTH_MODE=token`` (the cluster's token from Ray's default place): Ray 2.5x+ starts
  a local cluster with token authentication, and a driver that joins it without that mode is refused.
* ``influence estimate --results DIR --target T --out F`` (a subprocess, on the serial run's results) as
  a fraction of the serial farm time (goal < 1 %), with and without its start-up; and the estimator
  in-process, ``estimate(InfluenceSums.empty(K, labels).add(masks, outputs))`` on the bare loop's
  outputs (``softmax_correct``), as a fraction too.

Every measurement writes into a fresh folder (results that exist are skipped, so a rerun into the same
folder would be a no-op). Wall clock (the only clock that sees Ray's worker processes), median of
``--repeats`` interleaved rounds after a warm-up round on ``--warmup-models`` jobs (start-up, serial,
bare loop and one 2-worker Ray run; job columns from the last round); OMP_NUM_THREADS=1 and one torch
thread everywhere but in the Ray clusters, whose processes get OMP_NUM_THREADS = every CPU (as a shell that
exports it would): each worker's threads are then pinned to its share (one CPU) by the engine alone, not
by the benchmark (about 4 minutes with the defaults on 2 cores). The outputs of the serial and the
2-worker farm are checked against the bare loop's, and the CLI's estimate against the in-process one.

Usage: python bench/influence_farm.py [--num-models 150] [--recipe synthetic-concepts] [--repeats 1]
[--warmup-models 4] [--skip-ray] [--skip-private-ray] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from confidently.influence import InfluenceSums, all_outputs, estimate, load_recipe
from safetensors.torch import load_file

BIN = Path(sys.executable).parent
OUTPUT = "softmax_correct"  # the estimator's default output

# A private local Ray cluster of N CPUs (one actor per CPU in map_stateful): prints its address, lives
# until stdin closes, then shuts down (ray.shutdown ends the processes it started).
CLUSTER = """
import sys, ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, log_to_driver=False, configure_logging=False,
         _temp_dir=sys.argv[2], _node_ip_address="127.0.0.1")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run_child(command: list[str], stdout, env: dict[str, str] | None = None) -> float:
    """Run a command to completion: wall seconds (exit on failure, with its stderr)."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        code = subprocess.run(command, stdout=stdout, stderr=errors, env=env or child_env()).returncode
        wall = time.perf_counter() - started
        if code:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} exited {code}:\n{errors.read().decode(errors='replace')[-4000:]}")
    return wall


class Cluster:
    """A local Ray cluster of ``cpus`` CPUs in a helper process; ``address`` to join it."""

    def __init__(self, cpus: int, env: dict[str, str]):
        self.temp = tempfile.mkdtemp(prefix="ifr")  # short: Ray's socket paths live under it
        self.errors = tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-c", CLUSTER, str(cpus), self.temp], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors, env=env, text=True)
        self.address = self.proc.stdout.readline().strip()
        self.up = time.perf_counter() - started
        if not self.address:
            self.proc.wait()
            self.errors.seek(0)
            raise SystemExit(f"the Ray cluster helper exited {self.proc.returncode}:\n"
                             f"{self.errors.read().decode(errors='replace')[-4000:]}")

    def close(self) -> float:
        started = time.perf_counter()
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own helper, by its handle
            self.proc.wait()
        down = time.perf_counter() - started
        self.errors.close()
        shutil.rmtree(self.temp, ignore_errors=True)
        return down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-models", type=int, default=150, help="jobs in the plan (a serial farm >= 20 s)")
    parser.add_argument("--recipe", default="synthetic-concepts", help="built-in recipe or recipe file")
    parser.add_argument("--alpha", type=float, default=0.5, help="fraction of units per model")
    parser.add_argument("--target", default=None, help="target task to estimate (default: the recipe's first)")
    parser.add_argument("--repeats", type=int, default=1, help="timed interleaved rounds (after one warm-up)")
    parser.add_argument("--warmup-models", type=int, default=4, help="jobs of the warm-up round (0: none)")
    parser.add_argument("--skip-ray", action="store_true", help="no Ray rows (also skipped when Ray is missing)")
    parser.add_argument("--skip-private-ray", action="store_true",
                        help="no plain `--engine ray` row (a private cluster started by the CLI itself)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep plans, results and records here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-influence-farm-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measure(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def make_plan(args: argparse.Namespace, work: Path, models: int, run_id: str) -> tuple[Path, list[dict]]:
    path = work / f"{run_id}.jsonl"
    with open(path, "w") as handle:
        run_child([tool("influence"), "plan", "--recipe", args.recipe, "--num-models", str(models),
                   "--alpha", str(args.alpha), "--run-id", run_id, "-q"], handle)
    return path, [json.loads(line) for line in open(path)]


def measure(args: argparse.Namespace, work: Path) -> None:
    load_before = os.getloadavg()
    use_ray = not args.skip_ray
    if use_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            use_ray = False
            print("Ray is not installed (pip install 'confidently[ray]'): no Ray rows", file=sys.stderr)
    plan, jobs = make_plan(args, work, args.num_models, "farm")
    warm_plan, warm_jobs = make_plan(args, work, max(2, args.warmup_models), "warmup")
    units = int(jobs[0]["num_units"])
    counter = iter(range(1 << 30))
    # the joining driver needs the auth mode; the whole machine's OMP_NUM_THREADS leaves the workers' threads to
    # the engine's pinning
    ray_env = child_env(RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"), OMP_NUM_THREADS=str(os.cpu_count()))
    kept: dict[str, object] = {}  # the latest run of each candidate: out dir / records / outputs
    side: dict[str, list[float]] = {"ray1 up": [], "ray1 down": [], "ray2 up": [], "ray2 down": []}

    def fresh(name: str) -> Path:
        return work / f"{name}-{next(counter):03d}"

    def train(name: str, plan_path: Path, extra: list[str], env: dict[str, str] | None = None) -> float:
        out = fresh(name)
        records = out.with_suffix(".jsonl")
        with open(records, "w") as handle:
            seconds = run_child([tool("influence"), "train", str(plan_path), "--recipe", args.recipe, "--out-dir",
                                 str(out), "-q", *extra], handle, env)
        kept[name] = (out, records)
        return seconds

    def bare(plan_jobs: list[dict]) -> float:
        started = time.perf_counter()
        recipe = load_recipe(args.recipe)
        outputs, each = [], []
        for job in plan_jobs:
            before = time.perf_counter()
            outputs.append(recipe.run(job["include"], int(job["train_seed"])))
            each.append(time.perf_counter() - before)
        seconds = time.perf_counter() - started
        kept["bare"], kept["bare seconds"] = outputs, each
        return seconds

    def ray_workers(name: str, cpus: int, plan_path: Path) -> float:
        cluster = Cluster(cpus, ray_env)
        try:
            seconds = train(name, plan_path, ["--engine", "ray", "--address", cluster.address], ray_env)
        finally:
            side[f"{name} down"].append(cluster.close())
        side[f"{name} up"].append(cluster.up)
        return seconds

    def private_ray(plan_path: Path) -> float:
        temp = tempfile.mkdtemp(prefix="ifr")  # the CLI's own cluster: its files (and no other cluster) here
        try:
            return train("private", plan_path, ["--engine", "ray"], {**ray_env, "RAY_TMPDIR": temp})
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def estimate_cli() -> float:
        out, _ = kept["serial"]
        kept["estimate file"] = fresh("estimate").with_suffix(".safetensors")
        return run_child([tool("influence"), "estimate", "--results", str(out), "--target", target, "--output", OUTPUT,
                          "--out", str(kept["estimate file"]), "-q"], subprocess.DEVNULL)

    def in_process_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masks = torch.zeros(len(jobs), units, dtype=torch.bool)
        for row, job in enumerate(jobs):
            masks[row, job["include"]] = True
        results = [result[target] for _, result in kept["bare"]]
        outputs = torch.stack([all_outputs(r.logits, r.labels)[OUTPUT] for r in results])
        return masks, outputs, results[0].labels

    def estimate_in_process() -> float:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept["estimate"] = estimate(InfluenceSums.empty(units, labels).add(masks, outputs))
        return time.perf_counter() - started

    def candidates(plan_path: Path, plan_jobs: list[dict], warm_up: bool) -> dict:
        chosen = {
            "start-up": lambda: run_child([tool("influence"), "--help"], subprocess.DEVNULL),
            "serial": lambda: train("serial", plan_path, []),
            "bare": lambda: bare(plan_jobs),
        }
        if not warm_up:
            chosen["estimate"] = estimate_cli
            chosen["in-process"] = estimate_in_process
        if use_ray:  # one Ray run warms up Ray (its first start is the slow one)
            if not warm_up:
                chosen["ray1"] = lambda: ray_workers("ray1", 1, plan_path)
            chosen["ray2"] = lambda: ray_workers("ray2", 2, plan_path)
            if not args.skip_private_ray and not warm_up:
                chosen["private"] = lambda: private_ray(plan_path)
        return chosen

    # Warm-up round (page cache, imports, Ray's first start) on a small plan of its own.
    if args.warmup_models > 0:
        for fn in candidates(warm_plan, warm_jobs, True).values():
            fn()
    for name in side:
        side[name].clear()
    target = args.target
    if target is None:  # the recipe's first task, from one job (the warm-up's, if any)
        first = kept["bare"][0] if "bare" in kept else load_recipe(args.recipe).run(jobs[0]["include"],
                                                                                      int(jobs[0]["train_seed"]))
        target = next(iter(first[1]))
    masks = outputs = labels = None

    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in candidates(plan, jobs, False).items():
            if name == "in-process" and masks is None:
                masks, outputs, labels = in_process_inputs()
            times.setdefault(name, []).append(fn())
    seconds = {name: statistics.median(values) for name, values in times.items()}
    load_after = os.getloadavg()
    report(args, seconds, side, kept, jobs, target, units, load_before, load_after, outputs)


def farm_outputs(out: Path, target: str) -> tuple[torch.Tensor, int]:
    files = sorted(out.rglob("job-*.safetensors"))
    return torch.stack([load_file(str(path))[f"{target}/{OUTPUT}"] for path in files]), len(files)


def report(args, seconds, side, kept, jobs, target, units, load_before, load_after, outputs) -> None:
    m = len(jobs)
    startup = seconds["start-up"]

    def per_hour(name: str, minus_startup: bool = False) -> float | None:
        spent = seconds[name] - (startup if minus_startup else 0.0)
        return 3600 * m / spent if spent > 0 else None

    def show(value: float | None, width: int, unit: str = "", digits: int = 2) -> str:
        if value is None:
            return f"{'n/a':>{width}}"
        return f"{value:>{width - len(unit)},.{digits if unit else 0}f}{unit}"

    def records(name: str) -> list[dict]:
        return [json.loads(line) for line in open(kept[name][1])]

    serial_records = records("serial")
    job_seconds = [r["seconds"] for r in serial_records]
    statuses = {r["status"] for r in serial_records}
    print(f"{m} {args.recipe} models ({units} units, alpha {args.alpha}), target {target!r}, output {OUTPUT}, "
          f"1 thread per worker, wall clock, median of {args.repeats} interleaved round(s); {os.cpu_count()} CPUs, "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"CLI start-up (influence --help) {startup:.2f} s; serial farm: first job {job_seconds[0]:.2f} s "
          f"(a fresh process's torch warm-up), median job {statistics.median(job_seconds):.3f} s, "
          f"Σ job seconds {sum(job_seconds):.1f} s of {seconds['serial']:.1f} s; statuses {sorted(statuses)}")
    print(f"{'':<50}{'seconds':>9}{'models/h':>10}{'-start-up':>10}{'job s':>8}{'Σ job s':>9}{'busy':>6}")
    rows = {"bare": "bare loop (recipe.run in-process)", "serial": "influence train (serial)"}
    if "ray1" in seconds:
        rows.update({"ray1": "influence train --engine ray, 1 worker",
                     "ray2": "influence train --engine ray, 2 workers"})
    if "private" in seconds:
        rows["private"] = f"influence train --engine ray (own cluster, {os.cpu_count()} CPUs)"
    for name, label in rows.items():
        minus = show(per_hour(name, True), 10) if name != "bare" else " " * 10
        each = kept["bare seconds"] if name == "bare" else [r["seconds"] for r in records(name)]
        busy = sum(each) / seconds[name]
        print(f"{label:<50}{seconds[name]:>9.2f}{show(per_hour(name), 10)}{minus}{statistics.median(each):>8.3f}"
              f"{sum(each):>9.1f}{busy:>6.2f}")
    if "ray1" in seconds:
        print(f"  (joined clusters: up {statistics.median(side['ray1 up']):.1f} s / down "
              f"{statistics.median(side['ray1 down']):.1f} s with 1 CPU, up {statistics.median(side['ray2 up']):.1f} s"
              f" / down {statistics.median(side['ray2 down']):.1f} s with 2; not in the seconds above)")
    print(f"{'influence estimate --results (CLI)':<50}{seconds['estimate']:>9.3f}")
    print(f"{'estimate(InfluenceSums.add) in-process':<50}{seconds['in-process']:>9.4f}")

    print("ratios")
    bare_rate = per_hour("bare")
    minus = per_hour("serial", True)
    print(f"{'serial / bare (goal >= 0.9x)':<50}{per_hour('serial') / bare_rate:>8.2f}x"
          f"   -start-up {'n/a' if minus is None else f'{minus / bare_rate:.2f}x'}")
    if "ray1" in seconds:
        print(f"{'ray 2 workers / 1 worker (goal >= 1.7x)':<50}{seconds['ray1'] / seconds['ray2']:>8.2f}x"
              f"   -start-up {(seconds['ray1'] - startup) / (seconds['ray2'] - startup):.2f}x")
        print(f"{'ray 2 workers / serial':<50}{seconds['serial'] / seconds['ray2']:>8.2f}x")
        print(f"{'ray 1 worker / serial':<50}{seconds['serial'] / seconds['ray1']:>8.2f}x")
    if "private" in seconds:
        print(f"{'ray own cluster / serial':<50}{seconds['serial'] / seconds['private']:>8.2f}x")
    farm = seconds["serial"]
    print(f"{'estimate CLI / serial farm (goal < 1 %)':<50}{100 * seconds['estimate'] / farm:>8.2f} %"
          f"   -start-up {100 * (seconds['estimate'] - startup) / farm:.2f} %")
    print(f"{'estimate in-process / serial farm':<50}{100 * seconds['in-process'] / farm:>8.4f} %")

    checks = []
    for name in ("serial", "ray2"):
        if name not in kept:
            continue
        ours, count = farm_outputs(kept[name][0], target)
        same = count == m and ours.shape == outputs.shape and torch.equal(ours, outputs)
        checks.append(f"{name} farm {'identical' if same else 'DIFFERS'} to the bare loop ({count} of {m} files"
                      + ("" if same or ours.shape != outputs.shape else
                         f", max |Δ| {float((ours - outputs).abs().max()):.2g}") + ")")
    cli = load_file(str(kept["estimate file"]))["overall"]
    mine = kept["estimate"].overall
    delta = float((cli - mine).nan_to_num().abs().max())  # units every model (or none) saw are NaN in both
    nans = "" if not bool(mine.isnan().any()) else (
        f", NaN units {'agree' if torch.equal(cli.isnan(), mine.isnan()) else 'DIFFER'} ({int(mine.isnan().sum())})")
    checks.append(f"CLI estimate vs in-process: max |Δ overall| {delta:.2g}{nans}")
    print("; ".join(checks))


if __name__ == "__main__":
    main()
