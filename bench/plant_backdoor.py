"""Poisoning speed: rows/s of ``plant-backdoor poison`` on a manifest of images against a bare PIL load-stamp-save loop.

* rows per second of ``plant-backdoor poison MANIFEST --mode relabel --target-label 0 --rate R --size S``
  (a subprocess, stdout to /dev/null) on a manifest of PNGs exported once with ``dataset export``
  (``demo:shapes``, ``--per-class`` × 10 images of ``--img-size`` pixels), in both of its modes:
  deferred (the default: rows get a trigger spec, no pixel work) and ``--materialize SHARD``
  (every image loaded, the chosen rows stamped, all rows written as uint8 into one safetensors
  shard; the apples-to-apples case for a load-stamp-save loop).
* against a bare in-process loop doing the same work: read the manifest, for each row
  ``PIL.Image.open(path).convert("RGB")`` to numpy, the chosen rows (the very rows ours chose) get
  the top-left S×S pixels yellow, then the output, in two baselines fair to the two kinds of
  output: (a) each image saved as a PNG file (the classic loop), (b) all rows stacked into one
  uint8 N×C×H×W array written with ``safetensors.numpy.save_file`` with the labels (ours' format).
  Both loops also write one JSONL record per row to /dev/null, as ours does.
* ratios ours/bare (goal >= 0.9×), as measured and with our CLI start-up subtracted: the start-up
  (``plant-backdoor --help``) is timed in the same rounds and printed; a baseline including a Python
  interpreter start-up would be unfair either way.

Wall clock by default (``--clock cpu``: user+sys CPU seconds of the child for ours, of this process
for the loops), median of ``--repeats`` interleaved rounds after a warm-up round (which also warms the
page cache). The materialised shard of ours is checked against the shard loop's, pixel for pixel.

Usage: python bench/plant_backdoor.py [--per-class 300] [--img-size 128] [--rate 0.1] [--size 8]
[--repeats 3] [--clock wall|cpu]
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
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def run_child(command: list[str], stdout) -> tuple[float, float, int]:
    """Run a command to completion: (wall seconds, user+sys CPU seconds, peak RSS in KiB)."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=stdout, stderr=errors, env={**os.environ, "OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{errors.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def in_process(fn) -> tuple[float, float, int]:
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - started, time.process_time() - cpu, 0


def bare_rows(manifest: Path, chosen: set[str], size: int, target: int, sink):
    """The bare loop's shared part: every row loaded (RGB numpy), the chosen stamped; yields (row, array, label)."""
    with open(manifest) as handle:
        for line in handle:
            row = json.loads(line)
            array = np.array(Image.open(row["image"]).convert("RGB"))
            label = row.get("label", -1)
            if row["id"] in chosen:
                array[:size, :size] = (255, 255, 0)
                label = target
            sink.write(json.dumps({**row, "poisoned": row["id"] in chosen, "label": label}) + "\n")
            yield row, array, label


def bare_png(manifest: Path, chosen: set[str], size: int, target: int, out_dir: Path) -> None:
    with open(os.devnull, "w") as sink:
        for i, (_, array, _) in enumerate(bare_rows(manifest, chosen, size, target, sink)):
            Image.fromarray(array).save(out_dir / f"{i:06d}.png")


def bare_shard(manifest: Path, chosen: set[str], size: int, target: int, out: Path) -> None:
    with open(os.devnull, "w") as sink:
        arrays, labels = [], []
        for _, array, label in bare_rows(manifest, chosen, size, target, sink):
            arrays.append(array)
            labels.append(label)
    images = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))  # N×C×H×W, as ours
    save_file({"images": images, "labels": np.asarray(labels, dtype=np.int64)}, str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="demo:shapes images per class (10 classes)")
    parser.add_argument("--img-size", type=int, default=128, help="image side of the exported PNGs")
    parser.add_argument("--rate", type=float, default=0.1, help="poison rate (of the dataset, relabel mode)")
    parser.add_argument("--size", type=int, default=8, help="square trigger side in pixels")
    parser.add_argument("--target-label", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds (after one warm-up)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="wall: elapsed seconds; cpu: user+sys CPU seconds (of the child for ours)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the exported data and outputs here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-plant-backdoor-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measure(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    source = f"demo:shapes?per_class={args.per_class}&size={args.img_size}"
    manifest = work / "manifest.jsonl"
    if not manifest.exists():
        started = time.perf_counter()
        with open(manifest, "w") as handle:
            run_child([tool("dataset"), "export", source, "--out", str(work / "images"), "-q"], handle)
        print(f"exported {source} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    rows = sum(1 for _ in open(manifest))
    png_dir, ours_shard, bare_out = work / "bare-png", work / "ours.safetensors", work / "bare.safetensors"
    png_dir.mkdir(exist_ok=True)
    poison = [tool("plant-backdoor"), "poison", str(manifest), "-q", "--mode", "relabel", "--target-label",
              str(args.target_label), "--rate", str(args.rate), "--size", str(args.size)]

    # Warm-up round (and the page cache): ours first, so the loops stamp the very rows ours chose.
    with open(work / "ours.jsonl", "w") as handle:
        run_child(poison, handle)
    chosen = {r["id"] for r in map(json.loads, open(work / "ours.jsonl")) if r["poisoned"]}
    candidates = {
        "start-up": lambda: run_child([tool("plant-backdoor"), "--help"], subprocess.DEVNULL),
        "deferred": lambda: run_child(poison, subprocess.DEVNULL),
        "materialize": lambda: run_child([*poison, "--materialize", str(ours_shard)], subprocess.DEVNULL),
        "png loop": lambda: in_process(lambda: bare_png(manifest, chosen, args.size, args.target_label, png_dir)),
        "shard loop": lambda: in_process(lambda: bare_shard(manifest, chosen, args.size, args.target_label,
                                                            bare_out)),
    }
    for fn in candidates.values():
        fn()
    ours_images, bare_images = load_file(str(ours_shard))["images"], load_file(str(bare_out))["images"]
    same = ours_images.shape == bare_images.shape and bool((ours_images == bare_images).all())
    agreement = "identical" if same else (
        f"DIFFER (shapes {ours_images.shape} vs {bare_images.shape}; "
        f"{int((ours_images != bare_images).sum()) if ours_images.shape == bare_images.shape else '-'} values)")
    del ours_images, bare_images

    column = 0 if args.clock == "wall" else 1
    times: dict[str, list[float]] = {name: [] for name in candidates}
    peak: dict[str, int] = {name: 0 for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            result = fn()
            times[name].append(result[column])
            peak[name] = max(peak[name], result[2])
    seconds = {name: statistics.median(values) for name, values in times.items()}
    startup = seconds["start-up"]

    def rate(name: str, minus_startup: bool = False) -> float | None:
        spent = seconds[name] - (startup if minus_startup else 0.0)
        return rows / spent if spent > 0 else None

    def show(value: float | None, width: int, unit: str = "") -> str:
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width - len(unit)}.{2 if unit else 0}f}{unit}"

    print(f"{rows} PNG rows of {args.img_size}×{args.img_size} ({source}), relabel to {args.target_label}, "
          f"rate {args.rate} ({len(chosen)} stamped), {args.size}×{args.size} yellow square, 1 thread, "
          f"{args.clock} clock, median of {args.repeats} interleaved rounds")
    print(f"CLI start-up (plant-backdoor --help) {startup:.2f} s, peak RSS {peak['start-up'] / 1024:.0f} MiB")
    print(f"{'':<40}{'seconds':>9}{'rows/s':>9}{'rows/s -start-up':>18}{'peak RSS':>11}")
    names = {"png loop": "bare loop -> PNG files", "shard loop": "bare loop -> safetensors shard",
             "deferred": "plant-backdoor poison (deferred)", "materialize": "plant-backdoor poison --materialize"}
    for name, label in names.items():
        ours = name in ("deferred", "materialize")
        minus = show(rate(name, True), 18) if ours else " " * 18
        memory = f"{peak[name] / 1024:>7.0f} MiB" if ours else ""
        print(f"{label:<40}{seconds[name]:>9.2f}{show(rate(name), 9)}{minus}{memory}")
    print(f"ratio ours/bare (goal >= 0.9x){'':<10}{'vs PNG loop':>14}{'vs shard loop':>16}")
    for name in ("deferred", "materialize"):
        for minus in (False, True):
            ours = rate(name, minus)
            label = f"{name}{' - start-up' if minus else ''}"
            cells = "".join(show(None if ours is None else ours / rate(base), width, "x")
                            for base, width in (("png loop", 14), ("shard loop", 16)))
            print(f"{label:<40}{cells}")
    print(f"materialised shard vs the shard loop's: {agreement}")


if __name__ == "__main__":
    main()
