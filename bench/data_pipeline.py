"""Images per second and memory of the streaming data layer, side by side with torchvision's loader.

* images/s of full passes (open, worker start, every float batch in [0, 1] summed) over a folder of
  ImageNet-like JPEGs (class subfolders, 500×375 and other aspect ratios, quality 90), interleaved rounds:
  (1) confidently's ``StreamLoader`` with the ``eval`` preprocess (shorter side 256, centre 224) as the library
  is, ``decode_uint8`` sending RGB/greyscale JPEGs through libjpeg-turbo; (2) the same on the library's Pillow
  branch only (``decode_uint8(path, channels=None)`` skips the turbo route; ``to_channels`` then makes RGB);
  (3) torchvision's ``ImageFolder`` + ``DataLoader``, ``Resize(256) + CenterCrop(224) + ToTensor()``. Same
  folder, workers and batch size (goal: toolbox / torchvision >= 0.95); plus a check that (1)'s pixels are (2)'s
  and CPU ms per image by stage in one process (steadier than wall clock on a shared machine);
* peak memory of ``advtrain eval --eps 0`` (a fresh process, workers included) over a small and a large folder
  (goal: large / small <= 1.2).

Gone: the "lean" Pillow variant is in the library now (EXIF transpose only when tagged, no ``.contiguous()``),
and Pillow's ``draft`` did nothing at ImageNet sizes (libjpeg only scales a shorter side >= 512).
Folders are made once under ``$CONFIDENTLY_BENCH_CACHE`` (default ``/tmp/confidently-bench``) and reused.
Set ``OMP_NUM_THREADS=1``.

Usage: python bench/data_pipeline.py [--images 1000] [--workers 2] [--batch-size 64] [--repeats 5]
       [--rss-small 2000] [--rss-large 20000] [--quick] [--skip-rss]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import torch
from confidently.data import ImageDataset, open_dataset
from confidently.data.loader import StreamLoader
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.io.images import _decode_jpeg_turbo, decode_uint8, to_channels
from PIL import Image

CACHE = Path(os.environ.get("CONFIDENTLY_BENCH_CACHE", Path(tempfile.gettempdir()) / "confidently-bench"))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "stereo_motorcycle")
# (width, height) of ImageNet-like photos, weighted roughly as ImageNet's val set is (4:3 landscape most often)
PHOTO_SIZES = ((500, 375),) * 5 + ((375, 500),) * 2 + ((500, 333), (333, 500), (500, 500), (640, 480), (500, 400))
SMALL_SIZES = ((96, 72), (72, 96), (80, 80), (96, 64), (64, 96))
FOLDER_VERSION = 1
EVAL = DataConfig((224, 224), "bilinear", 0.875)
RSS_IMG_SIZE = 32  # the advtrain eval model's input size
LABELS = {"toolbox": "toolbox StreamLoader (library: libjpeg-turbo)",
          "toolbox-pillow": "toolbox StreamLoader, Pillow branch only",
          "torchvision": "torchvision ImageFolder+DataLoader (PIL)"}


# --- the folders ------------------------------------------------------------------------------------------


def _photo(name: str) -> np.ndarray:
    import skimage.data

    array = getattr(skimage.data, name)()
    array = array[0] if isinstance(array, tuple) else array
    return np.asarray(Image.fromarray(array).convert("RGB"))


def _crop(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator, noise: float) -> Image.Image:
    """A random crop of ``photo`` at ``size``'s aspect ratio, resized to ``size``, flipped at random,
    with a little sensor-like noise so the JPEG's entropy (and decode cost) is a real photo's."""
    width, height = size
    ph, pw = photo.shape[:2]
    scale = min(pw / width, ph / height) * rng.uniform(0.55, 1.0)
    cw, ch = max(8, int(width * scale)), max(8, int(height * scale))
    left, top = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    image = Image.fromarray(photo[top:top + ch, left:left + cw]).resize((width, height), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    if noise:
        array = array + rng.normal(0.0, noise, array.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def photo_folder(count: int, kind: str = "photo") -> Path:
    """A class-subfolder folder of ``count`` JPEGs (quality 90), one class per scikit-image photo, made once
    under the cache and reused (keyed by count, kind and the generator's version)."""
    sizes, noise = (PHOTO_SIZES, 3.0) if kind == "photo" else (SMALL_SIZES, 2.0)
    key = hashlib.sha256(repr((FOLDER_VERSION, kind, count, sizes, noise, PHOTOS)).encode()).hexdigest()[:10]
    root = CACHE / f"data_pipeline-{kind}-{count}-{key}"
    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    photos = [_photo(name) for name in PHOTOS]
    if kind != "photo":  # small crops come from small copies: generating 20k of them stays quick
        photos = [np.asarray(Image.fromarray(p).reduce(max(1, min(p.shape[:2]) // 192))) for p in photos]
    for name in PHOTOS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        c = i % len(PHOTOS)
        rng = np.random.default_rng([FOLDER_VERSION, i])
        image = _crop(photos[c], sizes[int(rng.integers(len(sizes)))], rng, noise)
        image.save(root / PHOTOS[c] / f"{PHOTOS[c]}_{i:06d}.JPEG", quality=90)
    (root / ".done").write_text(f"{count}\n")
    return root


# --- the three sides --------------------------------------------------------------------------------------


def _path(dataset: ImageDataset, index: int) -> str:
    record = dataset.records[index]
    return os.path.join(record.base_dir, record.data["image"])


class PillowOnly(ImageDataset):
    """Files decoded on the library's own Pillow branch: ``decode_uint8`` takes the libjpeg-turbo route only for
    ``channels=3``; with ``None`` an RGB file goes the Pillow way unchanged (``to_channels`` makes grey RGB)."""

    @classmethod
    def of(cls, dataset: ImageDataset) -> PillowOnly:
        return cls(dataset.records, name=dataset.name, classes=dataset.classes, channels=dataset.channels)

    def raw(self, index: int) -> torch.Tensor:
        return to_channels(decode_uint8(_path(self, index), None), self.channels)


def toolbox_loader(folder: Path, workers: int, batch_size: int, pillow_only: bool = False) -> StreamLoader:
    dataset = PillowOnly.of(open_dataset(folder)) if pillow_only else open_dataset(folder)
    return StreamLoader(dataset, make_preprocess("eval", EVAL), batch_size=batch_size, workers=workers)


def peer_transform():
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])


def torchvision_loader(folder: Path, workers: int, batch_size: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets

    return DataLoader(datasets.ImageFolder(str(folder), transform=peer_transform()), batch_size=batch_size,
                      num_workers=workers)


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the loader workers, once a pass has stopped them)."""
    return sum(usage.ru_utime + usage.ru_stime for usage in
               (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def measure_passes(sides: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """images/s and CPU ms per image (all processes) of every full pass of each side (batches summed), in
    interleaved rounds (the order rotating each round) so load drifts hit all sides alike."""
    rates, cpu = {name: [] for name in sides}, {name: [] for name in sides}
    names = list(sides)
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            gc.collect()  # outside the measurement: the last pass's garbage is not this one's cost
            cpu_before = _cpu_seconds()
            started, count = time.perf_counter(), 0
            loader = sides[name]()
            for batch in loader:
                images = batch.images if hasattr(batch, "images") else batch[0]
                float(images.sum())
                count += images.shape[0]
            seconds = time.perf_counter() - started
            del loader  # persistent workers: stop them before the next side runs
            if _tree(os.getpid()):
                raise SystemExit(f"{name}: worker processes still running after the pass")
            rates[name].append(count / seconds)
            cpu[name].append(1e3 * (_cpu_seconds() - cpu_before) / count)
    return rates, cpu


def pixel_check(folder: Path) -> tuple[int, int, int, int]:
    """Over every file: how many the library sends through libjpeg-turbo, how many decode to exactly the Pillow
    branch's pixels, and the largest difference (0-255 levels)."""
    dataset = open_dataset(folder)
    pillow = PillowOnly.of(dataset)
    turbo = equal = worst = 0
    for index in range(len(dataset)):
        turbo += _decode_jpeg_turbo(_path(dataset, index)) is not None
        ours, theirs = dataset.raw(index), pillow.raw(index)
        equal += torch.equal(ours, theirs)
        worst = max(worst, float((ours.int() - theirs.int()).abs().max()))
    return len(dataset), turbo, equal, int(worst)


# --- where the CPU goes -----------------------------------------------------------------------------------


def _best(run, repeats: int) -> float:
    return min(timeit.repeat(run, timer=time.process_time, number=1, repeat=repeats))


def _to_shared(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack a batch into shared memory, as a loader worker hands it to the main process."""
    stacked = torch.stack(rows)
    shared = torch.empty(0, dtype=stacked.dtype).set_(
        stacked.untyped_storage()._new_shared(stacked.numel() * stacked.element_size()))
    return shared.resize_(stacked.shape).copy_(stacked)


def _stages(decode, transform, items: list[tuple[int, str]], batch_size: int, repeats: int,
            to_float: bool) -> dict[str, float]:
    decoded = [decode(*item) for item in items]
    done = [transform(image) for image in decoded]
    rows = [done[i:i + batch_size] for i in range(0, len(done), batch_size)]
    shared = [_to_shared(batch) for batch in rows]
    costs = {"decode": _best(lambda: [decode(*item) for item in items], repeats),
             "preprocess": _best(lambda: [transform(image) for image in decoded], repeats),
             "batch": _best(lambda: [_to_shared(batch) for batch in rows], repeats),
             "main": _best(lambda: [b.float().div_(255.0) for b in shared], repeats) if to_float else 0.0}
    costs = {k: 1e3 * v / len(items) for k, v in costs.items()}
    return {**costs, "total": sum(costs.values())}


def stage_costs(folder: Path, images: int, batch_size: int, repeats: int) -> dict[str, dict[str, float]]:
    """CPU ms per image of each stage, one process, best of ``repeats``: decode, per-image preprocess, the
    worker's batch (stacked into shared memory) and the main process's uint8 -> float (torchvision's batches
    are float already)."""
    dataset = open_dataset(folder)
    pillow = PillowOnly.of(dataset)
    items = [(i, _path(dataset, i)) for i in range(0, len(dataset), max(1, len(dataset) // images))][:images]
    preprocess = make_preprocess("eval", EVAL)
    def pil_loader(index: int, path: str):  # ImageFolder's default loader
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")

    return {"toolbox": _stages(lambda i, p: dataset.raw(i), preprocess, items, batch_size, repeats, True),
            "toolbox-pillow": _stages(lambda i, p: pillow.raw(i), preprocess, items, batch_size, repeats, True),
            "torchvision": _stages(pil_loader, peer_transform(), items, batch_size, repeats, False)}


# --- peak memory of advtrain eval -------------------------------------------------------------------------

# ru_maxrss through a small wrapper: a child spawned straight from this process reports this process's own
# high-water mark (exec keeps the old address space's) whenever that is the larger
RUSAGE_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def _tree(pid: int) -> list[int]:
    """``pid``'s descendants (not itself), from /proc's children lists."""
    found, todo = [], [pid]
    while todo:
        for path in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(k) for k in path.read_text().split()]
            except OSError:
                continue
            found, todo = found + kids, todo + kids
    return found


def _memory(pid: int) -> tuple[int, int]:
    """RSS and PSS of one process in kB (0, 0 if it is gone)."""
    try:
        fields = dict(line.split()[:2] for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines())
    except OSError:
        return 0, 0
    return int(fields.get("Rss:", 0)), int(fields.get("Pss:", 0))


def eval_peak_memory(folder: Path, model: Path, workers: int, batch_size: int) -> dict[str, float]:
    """Peak MiB of one ``advtrain eval --eps 0`` in a fresh process: the process tree's summed RSS and PSS (main
    process and workers, sampled from /proc every 20 ms) and the largest single process (``ru_maxrss``)."""
    advtrain = Path(sys.executable).with_name("advtrain")
    command = [sys.executable, "-c", RUSAGE_WRAPPER, str(advtrain), "eval", "--model", str(model), "--data",
               str(folder), "--eps", "0", "--workers", str(workers), "--batch-size", str(batch_size),
               "--device", "cpu", "-q"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks = {"rss": 0, "pss": 0, "processes": 0}
    while process.poll() is None:  # the wrapper prints one short line, at its end: the pipe cannot fill
        pids = _tree(process.pid)
        sizes = [_memory(pid) for pid in pids]
        peaks["rss"] = max(peaks["rss"], sum(r for r, _ in sizes))
        peaks["pss"] = max(peaks["pss"], sum(p for _, p in sizes))
        peaks["processes"] = max(peaks["processes"], len(pids))
        time.sleep(0.02)
    maxrss, code = (int(v) for v in process.stdout.read().split())
    if code != 0:
        raise SystemExit(f"advtrain eval exited {code} on {folder}")
    return {"tree_rss": peaks["rss"] / 1024, "tree_pss": peaks["pss"] / 1024, "single": maxrss / 1024,
            "processes": peaks["processes"], "seconds": time.perf_counter() - started}


def eval_model() -> Path:
    from confidently.models import create_model, save_model

    path = CACHE / f"data_pipeline-small_cnn-{len(PHOTOS)}-{RSS_IMG_SIZE}.safetensors"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        save_model(create_model("small_cnn", len(PHOTOS), img_size=RSS_IMG_SIZE), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="JPEGs in the throughput folder")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved passes per side")
    parser.add_argument("--rss-small", type=int, default=2000)
    parser.add_argument("--rss-large", type=int, default=20000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 128 images, 1 repeat, 300/1500 for RSS")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats, args.rss_small, args.rss_large = 128, 1, 300, 1500
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()

    folder = photo_folder(args.images)
    files = list(folder.glob("*/*.JPEG"))
    kb = sum(path.stat().st_size for path in files) / len(files) / 1024
    for path in files:
        path.read_bytes()  # warm the page cache for every side
    print(f"{args.images} JPEGs (quality 90, mean {kb:.0f} kB, 333-640 px a side) in {folder}")
    print(f"workers {args.workers}, batch {args.batch_size}; toolbox eval preprocess = torchvision Resize(256) + "
          "CenterCrop(224); a pass = open + worker start + every float batch summed")
    count, turbo, equal, worst = pixel_check(folder)
    print(f"pixels: the library sent {turbo} of {count} files through libjpeg-turbo; {equal} of {count} decode "
          f"exactly to the Pillow branch's pixels (max |diff| {worst} levels)")

    stage_count = min(args.images, 64 if args.quick else 256)
    stages = stage_costs(folder, stage_count, args.batch_size, max(2, args.repeats))
    columns = ("decode", "preprocess", "batch", "main", "total")
    print(f"CPU ms per image by stage, one process, {stage_count} images (batch = stack into shared memory; "
          "main = uint8 -> float):")
    print(f"  {'':46s} " + " ".join(f"{k[:7]:>7s}" for k in columns))
    for name, costs in stages.items():
        print(f"  {LABELS[name]:46s} " + " ".join(f"{costs[k]:7.3f}" for k in columns))

    sides = {"toolbox": lambda: toolbox_loader(folder, args.workers, args.batch_size),
             "toolbox-pillow": lambda: toolbox_loader(folder, args.workers, args.batch_size, pillow_only=True),
             "torchvision": lambda: torchvision_loader(folder, args.workers, args.batch_size)}
    passes, cpu = measure_passes(sides, args.repeats)
    best = {name: max(values) for name, values in passes.items()}
    median = {name: statistics.median(values) for name, values in passes.items()}
    print(f"full passes, interleaved: images/s best / median of {args.repeats}, ratios to torchvision's "
          "(best / median), CPU ms per image of all processes (median):")
    for name in sides:
        goal = "  (goal >= 0.95)" if name != "torchvision" else ""
        print(f"  {LABELS[name]:46s} {best[name]:7.1f} / {median[name]:7.1f}   ratio "
              f"{best[name] / best['torchvision']:.2f}x / {median[name] / median['torchvision']:.2f}x   "
              f"CPU {statistics.median(cpu[name]):5.2f} ms{goal}")
    speedup, median_speedup = best["toolbox"] / best["toolbox-pillow"], median["toolbox"] / median["toolbox-pillow"]
    turbo_cpu, pillow_cpu = statistics.median(cpu["toolbox"]), statistics.median(cpu["toolbox-pillow"])
    print(f"decoder: by best pass {'libjpeg-turbo' if speedup >= 1 else 'Pillow'} wins (turbo / Pillow {speedup:.2f}x "
          f"best, {median_speedup:.2f}x median); by CPU {'libjpeg-turbo' if turbo_cpu <= pillow_cpu else 'Pillow'} "
          f"wins ({turbo_cpu:.2f} vs {pillow_cpu:.2f} ms per image in passes, {stages['toolbox']['decode']:.2f} vs "
          f"{stages['toolbox-pillow']['decode']:.2f} ms decoding)")

    if not args.skip_rss:
        model = eval_model()
        small, large = (eval_peak_memory(photo_folder(n, "small"), model, args.workers, args.batch_size)
                        for n in (args.rss_small, args.rss_large))
        print(f"advtrain eval --eps 0 --workers {args.workers} (small_cnn at {RSS_IMG_SIZE} px, 64-96 px JPEGs), "
              "peak MiB:")
        for key, label in (("tree_rss", "process tree, summed RSS"), ("tree_pss", "process tree, summed PSS"),
                           ("single", "largest single process")):
            goal = "   (goal <= 1.2)" if key == "tree_rss" else ""
            print(f"  {label:26s} {args.rss_small:>6d} images {small[key]:7.1f}   {args.rss_large:>6d} images "
                  f"{large[key]:7.1f}   ratio {large[key] / small[key]:.2f}x{goal}")
        growth = large["tree_pss"] - small["tree_pss"]
        print(f"  PSS growth {growth:+.1f} MiB for {args.rss_large - args.rss_small} more images "
              f"({1024 * growth / (args.rss_large - args.rss_small):+.2f} kB each); {small['processes']} / "
              f"{large['processes']} processes seen; runs took {small['seconds']:.1f} s / {large['seconds']:.1f} s")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
