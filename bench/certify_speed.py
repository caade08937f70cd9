"""Certification speed, side by side with ART's smoothed ViT and with the ideal of token dropping.

* images/s of confidently's smoothing (``ablation_votes`` + certificates, all ablations of a
  batch ablation-major), and of ``certify run`` on the same images (what users run: process
  start, model and image loading included) against ART's ``PyTorchDeRandomizedSmoothing.eval_and_certify`` on the
  same timm ViT (``vit_tiny_patch16_224``, random weights copied across), column ablations of
  the same size at stride 1 (goal >= 2×). Install ART with ``pip install -e '.[bench]'``.
* the token-dropping speed-up of a forward over the same ablated batch against the ideal ratio
  of total to kept tokens (goal >= 70 % of ideal).

Usage: python bench/certify_speed.py [--images 8] [--ablation-size 19] [--img-size 224]
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
import torch
from confidently.models import create_model, save_model, token_keep_mask, vit_forward_kept
from confidently.smoothing import Ablation, ablation_votes, certify_counts, vote_counts
from safetensors.torch import save_file


def seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_seconds(model, images: torch.Tensor, args: argparse.Namespace) -> float:
    """Wall time of one ``certify run`` over ``images`` (a safetensors shard) at the same geometry."""
    installed = Path(sys.executable).with_name("certify")  # this interpreter's, then PATH's
    tool = str(installed) if installed.exists() else shutil.which("certify")
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "model.safetensors")
        save_file({"images": images.contiguous()}, Path(tmp) / "images.safetensors")
        records = "".join(json.dumps({"id": str(i), "image": {"tensors": "images.safetensors", "key": "images",
                                                               "index": i}}) + "\n" for i in range(len(images)))
        command = [tool, "run", "-", "--model", "model.safetensors", "--ablation-size", str(args.ablation_size),
                   "--patch-sizes", str(args.patch_size), "--batch-size", str(args.batch_size), "--device", "cpu",
                   "-q"]
        started = time.perf_counter()
        proc = subprocess.run(command, input=records, cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if proc.returncode:
            raise SystemExit(f"certify run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny_patch16_224")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--ablation-size", type=int, default=19)
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size, classes = args.img_size, 10
    model = create_model(args.arch, classes, img_size=size, mean=(0.0,) * 3, std=(1.0,) * 3).eval()
    images = torch.rand(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    ablation = Ablation("column", args.ablation_size, 1)
    delta = ablation.delta(size, size, args.patch_size)

    def ours():
        counts = vote_counts(ablation_votes(model, images, ablation, drop_tokens=True, batch_size=args.batch_size),
                             classes)
        return certify_counts(counts, delta)

    ours_s = seconds(ours, args.repeats)
    print(f"{args.arch} at {size}×{size}, column b={args.ablation_size} s=1 ({ablation.count(size, size)} ablations), "
          f"{args.images} images, {args.threads} thread(s)")
    print(f"confidently             {args.images / ours_s:8.2f} images/s")
    cli_s = cli_seconds(model, images, args)
    print(f"certify run (CLI)       {args.images / cli_s:8.2f} images/s (start-up and loading included)")

    masks = ablation.masks(size, size)
    patch = model.net.patch_embed.patch_size[0]
    gains, ideals = [], []
    batch = model.normalize(images)
    with torch.no_grad():
        for index in (0, len(masks) // 3, len(masks) - 1):  # no wrap, and with wrap at the end
            ablated = batch * masks[index]
            keep = token_keep_mask(masks[index], patch, "any")
            full = seconds(lambda ablated=ablated: model.net(ablated), args.repeats)
            kept = seconds(lambda ablated=ablated, keep=keep: vit_forward_kept(model.net, ablated, keep), args.repeats)
            gains.append(full / kept)
            ideals.append(keep.numel() / int(keep.sum()))
    gain, ideal = statistics.mean(gains), statistics.mean(ideals)
    print(f"token dropping          {gain:8.2f}x faster than all tokens; ideal {ideal:.2f}x; "
          f"{100 * gain / ideal:.0f} % of ideal (goal >= 70 %)")
    try:
        from art.estimators.certification.derandomized_smoothing import PyTorchDeRandomizedSmoothing
    except ImportError:
        print("ART not installed: pip install -e '.[bench]'")
        return
    art = PyTorchDeRandomizedSmoothing(model=args.arch, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, size, size),
                                       nb_classes=classes, ablation_size=args.ablation_size, algorithm="salman2021",
                                       ablation_type="column", replace_last_layer=True, load_pretrained=False,
                                       device_type="cpu", verbose=False)
    art.model.load_state_dict(model.net.state_dict(), strict=False)
    # ART 1.20's ViT.forward_features predates timm 1.0's attn_mask/is_causal arguments, which
    # timm's forward passes on; route its forward around them so the peer runs at all.
    art.model.forward = lambda x: art.model.forward_head(art.model.forward_features(x))
    x, y = images.numpy(), np.eye(classes)[np.zeros(args.images, dtype=int)]
    art_s = seconds(lambda: art.eval_and_certify(x, y, size_to_certify=args.patch_size,
                                                 batch_size=args.images, verbose=False), args.repeats)
    print(f"ART smoothed ViT        {args.images / art_s:8.2f} images/s")
    print(f"ratio                   {art_s / ours_s:8.2f}x ART's speed (goal >= 2x)")


if __name__ == "__main__":
    main()
