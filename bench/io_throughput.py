"""Records per second: reading a manifest and decoding its images, against a bare PIL loop.

Both sides decode the same PNG files to float C×H×W tensors in [0, 1]; the difference is
what confidently adds (JSON parsing, record validation, path resolution, error handling).
Goal: ratio >= 0.9. Usage: python bench/io_throughput.py [--count N] [--size S] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from confidently.data import open_dataset
from confidently.io.images import ImageLoader
from confidently.io.records import RecordReader
from PIL import Image


def make_files(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        array = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(root / f"{i}.png")
        lines.append(json.dumps({"id": f"img-{i}", "image": f"{i}.png", "label": i % 10}))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def bare_pil(manifest: Path) -> int:
    """The peer: a plain loop over the same files with PIL and numpy."""
    paths = sorted(manifest.parent.glob("*.png"), key=lambda p: int(p.stem))
    for path in paths:
        with Image.open(path) as img:
            torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float().div_(255.0)
    return len(paths)


def confidently_stream(manifest: Path) -> int:
    """Stream records with validation and decode each record's image."""
    loader = ImageLoader()
    count = 0
    for record in RecordReader(manifest, require_image=True):
        loader.load(record.data["image"], record.base_dir)
        count += 1
    return count


def confidently_dataset(manifest: Path) -> int:
    data = open_dataset(manifest)
    for index in range(len(data)):
        data[index]
    return len(data)


def best_rate(fn, manifest: Path, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = fn(manifest)
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_files(Path(tmp), args.count, args.size)
        bare_pil(manifest)  # warm the page cache for both sides
        peer = best_rate(bare_pil, manifest, args.repeats)
        stream = best_rate(confidently_stream, manifest, args.repeats)
        dataset = best_rate(confidently_dataset, manifest, args.repeats)
    print(f"{args.count} PNG images {args.size}x{args.size}, best of {args.repeats}")
    print(f"bare PIL loop              {peer:9.0f} records/s")
    print(f"confidently RecordReader   {stream:9.0f} records/s   ratio {stream / peer:.2f}x (goal >= 0.9)")
    print(f"confidently open_dataset   {dataset:9.0f} records/s   ratio {dataset / peer:.2f}x")


if __name__ == "__main__":
    main()
