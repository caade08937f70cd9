"""Certification speed, side by side with ART's smoothed ViT and with the ideal of token dropping.

* images/s of confidently's smoothing through the library (``ablation_votes`` + certificates) and
  through ``certify run`` on PNG files (what users run: process start, model loading and decoding
  included, over ``--cli-images``), at stride 1 (the same work as ART: goal >= 1.25x ART) and at the
  thesis's stride 10 (ART has no stride and runs every column: goal >= 8x ART), and ``certify run
  --early-stop`` at stride 1 (no peer has it; how far it goes depends on the model: a random one
  settles most images in the first round);
* ART's ``PyTorchDeRandomizedSmoothing.eval_and_certify`` on the same timm ViT (``vit_tiny_patch16_224``,
  random weights copied across), column ablations of the same size (install it with
  ``pip install -e '.[bench]'``): in this process on the library's images, and as an ART user runs it, a
  fresh Python process that imports ART, builds the peer, loads the weights and decodes the same PNG files
  as ``certify run`` (start-up included on both sides: the CLI's start-up is not a cost ART escapes);
* the token-dropping speed-up of a forward over the same ablated batch against the ideal ratio
  of total to kept tokens (goal >= 70 % of ideal).

Every figure is the median of ``--repeats`` interleaved runs (one of each per round), so load from
other processes falls on all of them alike.

Usage: python bench/certify_speed.py [--images 8] [--cli-images 32] [--repeats 3] [--threads 1]
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from confidently.io.images import save_image
from confidently.models import create_model, save_model, token_keep_mask, vit_forward_kept
from confidently.smoothing import Ablation, ablation_votes, certify_counts, vote_counts
from peers import art_smoothed_vit

GOALS = {"stride 1": 1.25, "stride 10": 8.0}  # x ART's images/s (issue 25)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, timed round-robin after one warm-up round."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def certify_tool() -> str:
    installed = Path(sys.executable).with_name("certify")  # this interpreter's, then PATH's
    return str(installed) if installed.exists() else shutil.which("certify")


def cli_run(folder: Path, manifest: str, stride: int, args: argparse.Namespace, *extra: str) -> Callable[[], None]:
    """One ``certify run`` over ``manifest`` (PNG files) at the benchmark's geometry."""
    command = [certify_tool(), "run", manifest, "--model", "model.safetensors", "--ablation-size",
               str(args.ablation_size), "--stride", str(stride), "--patch-sizes", str(args.patch_size),
               "--batch-size", str(args.batch_size), "--device", "cpu", "-q", *extra]
    return child(command, folder, args.threads, "certify run")


def child(command: list[str], folder: Path, threads: int, what: str) -> Callable[[], None]:
    """A run of ``command`` in ``folder`` with ``threads`` threads, stopping the benchmark if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}

    def run() -> None:
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")

    return run


def write_photos(folder: Path, count: int, size: int) -> None:
    generator = torch.Generator().manual_seed(1)
    lines = []
    for index in range(count):
        save_image(torch.rand(3, size, size, generator=generator), folder / f"{index}.png")
        lines.append(json.dumps({"id": str(index), "image": f"{index}.png"}))
    (folder / "photos.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "none.jsonl").write_text("")


def art_script(folder: Path, manifest: str, args: argparse.Namespace) -> Callable[[], None]:
    """ART as a script in a fresh process on the PNG files of ``manifest`` (this file, ``--art-child``)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--art-child", str(folder / manifest),
               "--arch", args.arch, "--img-size", str(args.img_size), "--ablation-size", str(args.ablation_size),
               "--patch-size", str(args.patch_size)]
    return child(command, folder, args.threads, "the ART script")


def art_child(manifest: Path, args: argparse.Namespace) -> None:
    """What an ART user's script does: import, build the smoothed ViT with the weights, decode, certify."""
    from confidently.io.images import load_image
    from confidently.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model(manifest.parent / "model.safetensors", "cpu")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    images = torch.stack([load_image(row["image"], manifest.parent) for row in rows])
    certify = art_certifier(args, model, images, model.num_classes)
    if certify is None:
        raise SystemExit("ART is not installed: pip install -e '.[bench]'")
    certify()


def art_certifier(args: argparse.Namespace, model, images: torch.Tensor, classes: int) -> Callable[[], object] | None:
    art = art_smoothed_vit(model, args.arch, args.img_size, classes, args.ablation_size)
    if art is None:
        return None
    x, y = images.numpy(), np.eye(classes)[np.zeros(len(images), dtype=int)]
    return lambda: art.eval_and_certify(x, y, size_to_certify=args.patch_size, batch_size=len(images), verbose=False)


def token_dropping(model, ablation: Ablation, images: torch.Tensor, repeats: int) -> None:
    size = images.shape[-1]
    masks = ablation.masks(size, size)
    patch = model.net.patch_embed.patch_size[0]
    gains, ideals = [], []
    batch = model.normalize(images)
    with torch.no_grad():
        for index in (0, len(masks) // 3, len(masks) - 1):  # no wrap, and with wrap at the end
            ablated = batch * masks[index]
            keep = token_keep_mask(masks[index], patch, "any")
            times = interleaved({"full": lambda ablated=ablated: model.net(ablated),
                                 "kept": lambda ablated=ablated, keep=keep: vit_forward_kept(model.net, ablated, keep)},
                                repeats)
            gains.append(times["full"] / times["kept"])
            ideals.append(keep.numel() / int(keep.sum()))
    gain, ideal = statistics.mean(gains), statistics.mean(ideals)
    print(f"token dropping               {gain:8.2f}x faster than all tokens; ideal {ideal:.2f}x; "
          f"{100 * gain / ideal:.0f} % of ideal (goal >= 70 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny_patch16_224")
    parser.add_argument("--images", type=int, default=8, help="Images for the library and ART.")
    parser.add_argument("--cli-images", type=int, default=32, help="PNG files per `certify run` at stride 1 and with "
                        "--early-stop (x4 at stride 10, whose start-up would otherwise dominate): a run certifies "
                        "a test set, so its start-up is shared by many images.")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--ablation-size", type=int, default=19)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--art-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.art_child is not None:
        art_child(args.art_child, args)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, classes = args.img_size, 10
    model = create_model(args.arch, classes, img_size=size, mean=(0.0,) * 3, std=(1.0,) * 3).eval()
    images = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    strides = {"stride 1": 1, "stride 10": 10}

    def library(stride: int) -> Callable[[], object]:
        ablation = Ablation("column", args.ablation_size, stride)
        delta = ablation.delta(size, size, args.patch_size)

        def run():
            votes = ablation_votes(model, images, ablation, drop_tokens=True, batch_size=args.batch_size)
            return certify_counts(vote_counts(votes, classes), delta)

        return run

    counts = {s: Ablation("column", args.ablation_size, s).count(size, size) for s in strides.values()}
    print(f"{args.arch} at {size}×{size}, column b={args.ablation_size} (stride 1: {counts[1]} ablations, stride 10: "
          f"{counts[10]}), {args.threads} thread(s); "
          f"library and ART on {args.images} images, `certify run` on {args.cli_images} PNG files at stride 1 and "
          f"{4 * args.cli_images} at stride 10; medians of {args.repeats} interleaved runs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(model, folder / "model.safetensors")
        write_photos(folder, 4 * args.cli_images, size)
        lines = (folder / "photos.jsonl").read_text().splitlines()
        (folder / "few.jsonl").write_text("\n".join(lines[:args.cli_images]) + "\n")
        runs: dict[str, Callable[[], object]] = {f"library {name}": library(s) for name, s in strides.items()}
        runs["cli stride 1"] = cli_run(folder, "few.jsonl", 1, args)
        runs["cli stride 10"] = cli_run(folder, "photos.jsonl", 10, args)
        runs["cli stride 1 --early-stop"] = cli_run(folder, "few.jsonl", 1, args, "--early-stop")
        runs["cli start-up"] = cli_run(folder, "none.jsonl", 1, args)
        peer = art_certifier(args, model, images, classes)
        if peer is not None:
            runs["ART"] = peer
            runs["ART script stride 1"] = art_script(folder, "few.jsonl", args)
        seconds = interleaved(runs, args.repeats)
    count = {"library stride 1": args.images, "library stride 10": args.images, "cli stride 1": args.cli_images,
             "cli stride 10": 4 * args.cli_images, "cli stride 1 --early-stop": args.cli_images,
             "ART": args.images, "ART script stride 1": args.cli_images}
    rate = {name: count[name] / seconds[name] for name in count if name in seconds}
    print(f"`certify run` start-up      {seconds['cli start-up']:8.2f} s (no image: Python, torch, timm, the model)")
    for name in ("library stride 1", "cli stride 1", "library stride 10", "cli stride 10", "cli stride 1 --early-stop"):
        line = f"{name:28s} {rate[name]:8.2f} images/s"
        if "ART" in rate:
            goal = next((g for key, g in GOALS.items() if name.endswith(key)), None)
            note = f"(goal >= {goal:g}x)" if goal else "(no peer has it)"
            line += f"  {rate[name] / rate['ART']:6.2f}x ART {note}"
        print(line)
    if "ART" in rate:
        print(f"{'ART smoothed ViT (stride 1)':28s} {rate['ART']:8.2f} images/s")
        script = rate["ART script stride 1"]
        print(f"{'ART as a script (stride 1)':28s} {script:8.2f} images/s  (a fresh process on the same "
              f"{args.cli_images} PNGs); `certify run` {rate['cli stride 1'] / script:.2f}x it (goal >= 1.25x)")
    else:
        print("ART not installed: pip install -e '.[bench]'")
    token_dropping(model, Ablation("column", args.ablation_size, 1), images, args.repeats)


if __name__ == "__main__":
    main()
