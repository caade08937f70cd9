"""Start-up: how long ``TOOL --help`` takes and how much memory it holds, for every tool, against an empty
interpreter (``python -c pass``) and against ``python -c "import torch"``, measured side by side in one run.

* wall seconds and peak RSS of each command as a fresh process (``/usr/bin/time``'s maximum resident set
  when it exists, else the children's ``ru_maxrss`` delta, which is an upper bound);
* the goal (issue "Tools that start in a blink"): ``TOOL --help`` at most 0.3 s above ``python -c pass`` and
  at most 150 MB peak RSS; the ``import torch`` row shows what a command that needs torch pays before its
  first record;
* first record: for commands that need torch, the seconds from start to the first line on stdout, above
  ``python -c "import torch"`` (goal: at most 0.5 s), on bundled digits and a one-epoch tiny model the
  benchmark makes first; and above ``python -c "import timm"``, which every model needs (the tiny archs
  are timm modules) and which imports torchvision, whose ``torchvision.ops`` imports ``torch._dynamo``:
  the part of the wait this project's own code adds;
* median of ``--repeats`` interleaved rounds after a warm-up round (which warms the page cache).

Usage: python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ("dataset", "advtrain", "certify", "ablate", "plant-backdoor", "influence", "report", "unadv-patch",
         "immunize", "render-3db")
TIME = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)


def executable(tool: str) -> str:
    installed = Path(sys.executable).parent / tool
    return str(installed if installed.exists() else Path(__file__).resolve().parents[1] / "bin" / tool)


def measure(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if TIME:
        started = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", *argv], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        return wall, int(proc.stderr.strip().splitlines()[-1]) / 1024
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=env)
    wall = time.perf_counter() - started
    return wall, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def first_line(argv: list[str], cwd: str) -> float:
    """Seconds from starting ``argv`` to its first line on stdout (the process is stopped there)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
    line = proc.stdout.readline()
    seconds = time.perf_counter() - started
    proc.kill()
    proc.wait()
    if not line:
        raise SystemExit(f"{' '.join(argv)} wrote nothing on stdout")
    return seconds


def record_commands(folder: str) -> dict[str, list[str]]:
    """Commands that need torch, on bundled data and a tiny model made here once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(Path(folder) / "made.jsonl", "w") as sink:
        subprocess.run([executable("dataset"), "export", "demo:digits", "--split", "test", "--limit", "64",
                        "--out", "digits", "-q"], check=True, cwd=folder, env=env, stdout=sink)
    subprocess.run([executable("advtrain"), "train", "--data", "demo:digits", "--split", "train", "--arch",
                    "tiny_resnet", "--epochs", "1", "--out", "cnn.safetensors", "-q"], check=True, cwd=folder,
                   env=env, stdout=subprocess.DEVNULL)
    return {
        "dataset export demo:digits": [executable("dataset"), "export", "demo:digits", "--split", "test",
                                       "--out", "again", "--force", "-q"],
        "certify run (1 image a batch)": [executable("certify"), "run", "made.jsonl", "--model", "cnn.safetensors",
                                          "--ablation-size", "8", "--stride", "4", "--batch-size", "1", "-q"],
        "ablate curve (1 image a batch)": [executable("ablate"), "curve", "made.jsonl", "--model",
                                           "cnn.safetensors", "--patch-size", "4", "--batch-size", "1", "-q"],
        "advtrain features": [executable("advtrain"), "features", "--model", "cnn.safetensors", "--data",
                              "made.jsonl", "--out", "features.safetensors", "--force", "-q"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = {"python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"],
            "python -c 'import timm'": [sys.executable, "-c", "import timm"],
            **{f"{tool} --help": [executable(tool), "--help"] for tool in TOOLS}}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for round_index in range(args.repeats + 1):
        for name, argv in runs.items():
            result = measure(argv)
            if round_index:  # the first round warms the page cache
                samples[name].append(result)
    wall = {name: statistics.median(w for w, _ in values) for name, values in samples.items()}
    rss = {name: statistics.median(m for _, m in values) for name, values in samples.items()}
    empty, torch_wall = wall["python -c pass"], wall["python -c 'import torch'"]
    print(f"{'command':28} {'wall s':>7} {'above pass':>10} {'÷ import torch':>14} {'peak MB':>8}  goal")
    for name in runs:
        above = wall[name] - empty
        meets = "" if name.startswith("python") else (
            "ok" if above <= 0.3 and rss[name] <= 150 else "MISSED (≤ 0.3 s above pass, ≤ 150 MB)")
        print(f"{name:28} {wall[name]:7.3f} {above:10.3f} {wall[name] / torch_wall:14.2f} {rss[name]:8.1f}  {meets}")
    with tempfile.TemporaryDirectory() as folder:
        commands = record_commands(folder)
        firsts: dict[str, list[float]] = {name: [] for name in commands}
        for round_index in range(args.repeats + 1):
            for name, argv in commands.items():
                seconds = first_line(argv, folder)
                if round_index:
                    firsts[name].append(seconds)
    timm_wall = wall["python -c 'import timm'"]
    print(f"\n{'first record':32} {'wall s':>7} {'above import torch':>18} {'above import timm':>17}  goal")
    for name, values in firsts.items():
        first = statistics.median(values)
        meets = "ok" if first - torch_wall <= 0.5 else "MISSED (≤ 0.5 s above import torch)"
        print(f"{name:32} {first:7.3f} {first - torch_wall:18.3f} {first - timm_wall:17.3f}  {meets}")


if __name__ == "__main__":
    main()
