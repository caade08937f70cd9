"""Render throughput: ``render-3db run`` against a bare render loop of the same engine, and 2 workers against 1.

* renders per second of ``render-3db run EXP --model M`` (a subprocess; records to a file) against a bare
  loop of the same engine and settings in a fresh process: the engine made, ``engine.load(object,
  environment, args)`` once, then ``engine.render(state, seed)`` per planned render with the SceneState
  the controls would write (goal >= 0.9×). ``run`` also applies the controls, quantises, runs the model on
  every render and writes records; its own loop time (the "N renders in S s" line it logs: from making
  its render worker — engine, model, scene — to the last record) is compared with the bare loop's (from
  making the engine to the last render; both pay the renderer's first import), and the wall time with
  the CLI start-up is printed too. Also the library loop (``run_jobs``, serial, in this process, the
  renderer already imported) against the bare loop in this process.
* ``render-3db run --engine ray --workers 2`` against ``--workers 1`` (goal >= 1.8× on 2 free cores): a
  private local Ray cluster per run (its start-up is outside the loop time), timed from the moment every
  actor has built its renderer, model and scene (the run logs "workers up after S s"), and with that
  start-up too. On a shared machine the load average is printed: with the cores taken by other work,
  2 workers cannot be twice as fast.

The experiment: one procedural mug in a grey studio, a heading grid (``--renders`` values, endpoint
false) at a fixed camera, ``--resolution`` and ``--samples``, one render thread; every run is preceded by a
warm-up run of the same renders (Dr.Jit caches its kernels on disk; bpy loads once). OMP_NUM_THREADS=1, but
for the Ray runs: every CPU (as a shell that exports it would), so each worker's threads are pinned to its
share (``num_cpus`` = the one render thread) by the engine alone.

Usage: python bench/render_3db.py [--engine bpy|mitsuba|null] [--renders 48] [--resolution 128]
[--samples 32] [--repeats 3] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

BIN = Path(sys.executable).parent
os.environ.setdefault("OMP_NUM_THREADS", "1")


def experiment(engine: str, renders: int, resolution: int, samples: int) -> dict:
    return {"objects": [{"id": "mug", "builtin": "mug", "label": 1, "color": [0.8, 0.3, 0.2]}],
            "environments": [{"id": "studio", "solid": [0.6, 0.6, 0.6]}],
            "render_args": {"engine": engine, "resolution": resolution, "samples": samples, "threads": 1},
            "policy": {"module": "grid", "samples_per_dim": renders},
            "controls": [{"module": "orientation", "rotation_x": 0.2, "rotation_y": 0,
                          "rotation_z": {"range": [-3.14159, 3.14159], "endpoint": False}},
                         {"module": "camera", "view_point_x": 0, "view_point_y": -1, "view_point_z": 0.4,
                          "zoom_factor": 1.0, "focal_length": 50}]}


def planned_scenes(path: Path) -> tuple:
    """The experiment, its planned jobs and the SceneState its controls write for each (what run renders)."""
    from confidently.render.scene import SceneState
    from confidently.render3db import iter_jobs, load_experiment

    plan = load_experiment(path)
    jobs = list(iter_jobs(plan, 0))
    states = []
    for job in jobs:
        state = SceneState()
        for setup in plan.controls:
            prefix = setup.name + "."
            setup.instantiate(plan.root).apply(state, {k[len(prefix):]: v for k, v in job.args.items()
                                                       if k.startswith(prefix)}, {"label": job.label})
        states.append(state)
    return plan, jobs, states


def bare_loop(path: Path) -> float:
    """Seconds of engine.load + engine.render for every planned render (the same states and seeds)."""
    from confidently.render.engines import engine_class

    plan, jobs, states = planned_scenes(path)
    start = time.perf_counter()
    engine = engine_class(plan.renderer)()
    engine.load(plan.objects[0], plan.environments[0], plan.render)
    for job, state in zip(jobs, states, strict=True):
        engine.render(state, job.seed)
    return time.perf_counter() - start


def bare_child(path: Path) -> float:
    """:func:`bare_loop` in a fresh interpreter (so it pays the renderer's import, as ``run`` does)."""
    done = subprocess.run([sys.executable, __file__, "--bare-child", str(path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"bare loop failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def library_loop(path: Path, model: Path) -> float:
    from confidently.render3db import WorkerSettings, check_model, iter_jobs, load_experiment, run_jobs
    from confidently.run import create_engine

    plan = load_experiment(path)
    settings = check_model(WorkerSettings(plan, str(model), "cpu", True, False))
    start = time.perf_counter()
    for _ in run_jobs(settings, iter_jobs(plan, 0), create_engine("serial")):
        pass
    return time.perf_counter() - start


def cli_run(workdir: Path, *extra: str) -> tuple[float, float, float]:
    """(wall seconds, the run's own loop seconds, the part of it its workers took to start: from its log)."""
    threads = str(os.cpu_count()) if "ray" in extra else "1"  # Ray workers: the engine pins them, not we
    env = {**os.environ, "OMP_NUM_THREADS": threads, "NO_COLOR": "1",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "render-3db"), "run", "exp.yaml", "--model", "model.safetensors",
                           "--out", "out.jsonl", *extra], cwd=workdir, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"render-3db run failed: {done.stderr[-2000:]}")
    match = re.search(r"(\d+) renders in ([0-9.]+) s \(workers up after ([0-9.]+) s\)", done.stderr)
    if match is None:
        sys.exit(f"render-3db run logged no timing line: {done.stderr[-2000:]}")
    return wall, float(match.group(2)), float(match.group(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="bpy")
    parser.add_argument("--renders", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--bare-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.bare_child is not None:
        print(bare_loop(args.bare_child))
        return
    from confidently.models import create_model, save_model

    workdir = Path(tempfile.mkdtemp(prefix="bench-render3db-"))
    (workdir / "exp.yaml").write_text(yaml.safe_dump(experiment(args.engine, args.renders, args.resolution,
                                                                args.samples)))
    torch.manual_seed(0)
    save_model(create_model("tiny_resnet", 10), workdir / "model.safetensors")
    n = args.renders
    print(f"engine {args.engine}, {n} renders of {args.resolution}² at {args.samples} spp, 1 thread; load "
          f"average {os.getloadavg()[0]:.2f}", flush=True)
    bare_loop(workdir / "exp.yaml")  # warm-up: kernels compiled and cached, files in the page cache
    cli_run(workdir)
    rows: dict[str, list[float]] = {"bare": [], "bare_here": [], "library": [], "cli_loop": [], "cli_wall": []}
    for _ in range(args.repeats):
        rows["bare"].append(bare_child(workdir / "exp.yaml"))
        rows["bare_here"].append(bare_loop(workdir / "exp.yaml"))
        rows["library"].append(library_loop(workdir / "exp.yaml", workdir / "model.safetensors"))
        wall, loop, _ = cli_run(workdir)
        rows["cli_wall"].append(wall)
        rows["cli_loop"].append(loop)
    med = {k: statistics.median(v) for k, v in rows.items()}
    rate = {k: n / v for k, v in med.items()}
    print(f"bare render loop        {rate['bare']:8.2f} renders/s  ({med['bare']:.2f} s, a fresh process)")
    print(f"bare loop, warm         {rate['bare_here']:8.2f} renders/s  ({med['bare_here']:.2f} s, this process)")
    print(f"run_jobs (library)      {rate['library']:8.2f} renders/s  ratio {rate['library'] / rate['bare_here']:.2f}× "
          "(against the warm bare loop)")
    print(f"render-3db run (loop)   {rate['cli_loop']:8.2f} renders/s  ratio {rate['cli_loop'] / rate['bare']:.2f}× "
          "(goal >= 0.9×)")
    print(f"render-3db run (wall)   {rate['cli_wall']:8.2f} renders/s  ratio {rate['cli_wall'] / rate['bare']:.2f}× "
          f"(with the start-up: imports, model, scene)")
    if args.skip_ray:
        return
    loops: dict[int, list[float]] = {1: [], 2: []}
    rendering: dict[int, list[float]] = {1: [], 2: []}
    cli_run(workdir, "--engine", "ray", "--workers", "2")  # warm-up
    for _ in range(args.repeats):
        for workers in (1, 2):
            _, loop, ready = cli_run(workdir, "--engine", "ray", "--workers", str(workers))
            loops[workers].append(loop)
            rendering[workers].append(loop - ready)
    one, two = (statistics.median(rendering[w]) for w in (1, 2))
    one_loop, two_loop = (statistics.median(loops[w]) for w in (1, 2))
    print(f"ray, 1 worker           {n / one:8.2f} renders/s  ({one:.2f} s once its actor is up; {one_loop:.2f} s "
          "with the actor's start-up)")
    print(f"ray, 2 workers          {n / two:8.2f} renders/s  ratio {one / two:.2f}× (goal >= 1.8×), "
          f"{one_loop / two_loop:.2f}× with the actors' start-up; load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"engine": args.engine, "renders": n, "run_vs_bare": rate["cli_loop"] / rate["bare"],
                      "library_vs_bare": rate["library"] / rate["bare_here"], "two_vs_one_workers": one / two,
                      "two_vs_one_workers_with_start_up": one_loop / two_loop}))


if __name__ == "__main__":
    main()
