"""Thesis-scale figures on one GPU, as JSON lines (``make gpu-check`` runs the ``cuda`` test tier first).

1. ``certify``: images/s of smoothing ``vit_base_patch16_224`` (random weights) at 224², column ablations of
   b = 19 at stride 1 and 10, through the library, against ART's ``PyTorchDeRandomizedSmoothing`` on the same
   model (ART has no stride: it runs every column). Goal: ≥ 2× ART at stride 1.
2. ``pgd_step``: a ResNet-50 PGD-3 training step (ℓ2, ε = 3, 224², batch 64) against (k + 1) = 4 standard steps
   (goal ≤ 1.1×) and against the same step with torchattacks' PGDL2 making the examples; fp32 and with AMP.
3. ``diffusion_memory``: peak GPU memory of one diffusion-attack iteration (4 unrolled denoising steps, forward
   and backward) on an SD-1.5-sized random LDM (``immunize tiny-model --scale sd15``) at 512², with and without
   gradient checkpointing (goal ≤ ⅓), through bench/immunize_speed.py's fresh-process worker.
4. ``render``: renders per second of Cycles (bpy) and Mitsuba on the GPU against the CPU, same scene.

Every part prints one line per figure, or one line with ``error`` and goes on. ``--smoke`` runs every part at
toy sizes on ``--device`` (default cuda), so the script itself can be checked on a CPU.

Usage: python bench/gpu_check.py [--device cuda] [--smoke] [--only certify,pgd_step,diffusion_memory,render]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # its neighbours: peers, immunize_speed, render_3db
PARTS = ("certify", "pgd_step", "diffusion_memory", "render")


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def timed(candidates: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median wall seconds per call, candidates interleaved round by round, the device synchronised."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for run in candidates.values():
        run()  # warm-up: kernels chosen, caches filled
    sync()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def certify(args: argparse.Namespace, device: torch.device) -> None:
    import numpy as np
    from confidently.models import create_model
    from confidently.smoothing import Ablation, ablation_votes, certify_counts, vote_counts
    from peers import art_smoothed_vit

    # ART builds its ViT at 224², so the smoke run keeps the geometry and shrinks the model and the images
    arch, images_n = ("vit_tiny_patch16_224", 1) if args.smoke else ("vit_base_patch16_224", 16)
    size, patch, classes, ablation_size = 224, 32, 10, 19
    torch.manual_seed(0)
    model = create_model(arch, classes, img_size=size, mean=(0.0,) * 3, std=(1.0,) * 3).eval().to(device)
    images = torch.rand(images_n, 3, size, size, generator=torch.Generator().manual_seed(0))
    candidates = {}
    for stride in (1, 10):
        ablation = Ablation("column", ablation_size, stride)
        delta = ablation.delta(size, size, patch)

        def ours(ablation=ablation, delta=delta) -> None:
            votes = ablation_votes(model, images.to(device), ablation, drop_tokens=True, batch_size=args.batch_size)
            certify_counts(vote_counts(votes, classes), delta)

        candidates[f"stride {stride}"] = ours
    art = art_smoothed_vit(model, arch, size, classes, ablation_size, device)
    if art is not None:
        x, y = images.numpy(), np.eye(classes)[np.zeros(images_n, dtype=int)]
        candidates["art"] = lambda: art.eval_and_certify(x, y, size_to_certify=patch, batch_size=images_n,
                                                         verbose=False)
    seconds = timed(candidates, args.repeats, device)
    for stride in (1, 10):
        ours_s = seconds[f"stride {stride}"]
        record = {"check": "certify", "arch": arch, "size": size, "ablation": f"column b={ablation_size}",
                  "stride": stride, "images": images_n, "device": str(device),
                  "images_per_s": round(images_n / ours_s, 3)}
        if "art" in seconds:
            record.update(art_images_per_s=round(images_n / seconds["art"], 3),
                          x_art=round(seconds["art"] / ours_s, 2), goal_x_art=2.0 if stride == 1 else None)
        else:
            record["art"] = "not installed: pip install -e '.[bench]'"
        emit(**record)


def pgd_step(args: argparse.Namespace, device: torch.device) -> None:
    from confidently.adversarial import PGDConfig, pgd_attack
    from confidently.models import create_model

    arch, size, batch = ("tiny_resnet", 32, 16) if args.smoke else ("resnet50", 224, 64)
    steps, eps = 3, 3.0
    torch.manual_seed(0)
    model = create_model(arch, 1000 if not args.smoke else 10).to(device).train()
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = PGDConfig.training("l2", eps, steps)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    for amp in (False, True):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

        def update(batch_images: torch.Tensor, autocast=autocast) -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(model(batch_images).float(), y)
            loss.backward()
            optimizer.step()

        def ours(update=update, amp=amp) -> None:  # the attack's passes in bf16 too, as `advtrain train --amp`
            adversarial = pgd_attack(model, x, y, config, autocast=torch.bfloat16 if amp else None)
            model.train()
            update(adversarial)

        candidates = {"standard": lambda update=update: update(x), "ours": ours}
        if torchattacks is not None:
            attack = torchattacks.PGDL2(model, eps=eps, alpha=config.alpha, steps=steps, random_start=False)

            def peer(update=update, autocast=autocast, attack=attack) -> None:
                model.eval()
                with autocast:
                    adversarial = attack(x, y)
                model.train()
                update(adversarial)

            candidates["torchattacks"] = peer
        seconds = timed(candidates, args.repeats, device)
        limit = (steps + 1) * seconds["standard"]
        record = {"check": "pgd_step", "arch": arch, "size": size, "batch": batch, "steps": steps,
                  "constraint": "l2", "eps": eps, "amp": amp, "device": str(device),
                  "standard_ms": round(1e3 * seconds["standard"], 2), "ours_ms": round(1e3 * seconds["ours"], 2),
                  "x_limit": round(seconds["ours"] / limit, 3), "goal_x_limit": 1.1}
        if "torchattacks" in seconds:
            record.update(torchattacks_ms=round(1e3 * seconds["torchattacks"], 2),
                          x_torchattacks=round(seconds["torchattacks"] / seconds["ours"], 3))
        emit(**record)


def diffusion_memory(args: argparse.Namespace, device: torch.device) -> None:
    from confidently.immunize import write_tiny_model
    from immunize_speed import diffusion_memory as measure

    scale, size = ("tiny", 32) if args.smoke else ("sd15", 512)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_tiny_model(Path(folder) / scale, size=size, unet="inpaint", seed=0, scale=scale)
        peaks = measure(model_dir, size, 4, str(device))
    with_, without = peaks[True], peaks[False]
    emit(check="diffusion_memory", model=f"{scale} random inpaint", size=size, denoise_steps=4, device=str(device),
         checkpointing_gib=round(with_["peak_bytes"] / 2 ** 30, 3), plain_gib=round(without["peak_bytes"] / 2 ** 30, 3),
         ratio=round(with_["peak_bytes"] / max(without["peak_bytes"], 1), 3), goal_ratio=round(1 / 3, 3),
         checkpointing_s=round(with_["seconds"], 2), plain_s=round(without["seconds"], 2))


def render(args: argparse.Namespace, device: torch.device) -> None:
    """The bare loop of bench/render_3db.py (engine made, scene loaded once, every planned render), per device."""
    import yaml
    from confidently.render.engines import engine_class
    from render_3db import experiment, planned_scenes

    renders, resolution, samples = (4, 32, 4) if args.smoke else (32, 256, 64)
    for renderer in ("bpy", "mitsuba"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "exp.yaml"
            path.write_text(yaml.safe_dump(experiment(renderer, renders, resolution, samples)))
            plan, jobs, states = planned_scenes(path)
            rates = {}
            for where in dict.fromkeys(("cpu", str(device))):
                engine = engine_class(plan.renderer)(device=where)
                engine.load(plan.objects[0], plan.environments[0], plan.render)
                engine.render(states[0], jobs[0].seed)  # warm-up: kernels compiled, scene uploaded
                started = time.perf_counter()
                for job, state in zip(jobs, states, strict=True):
                    engine.render(state, job.seed)
                rates[where] = len(jobs) / (time.perf_counter() - started)
        emit(check="render", engine=renderer, renders=len(jobs), resolution=resolution, samples=samples,
             cpu_renders_per_s=round(rates["cpu"], 2), device=str(device),
             device_renders_per_s=round(rates[str(device)], 2), x_cpu=round(rates[str(device)] / rates["cpu"], 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="Toy sizes: check the script itself (any device).")
    parser.add_argument("--only", default=",".join(PARTS), help="Comma-separated parts to run.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256, help="Ablations per forward (certify).")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (use --device cpu --smoke to check the script)")
    if device.type == "cuda":
        emit(check="device", name=torch.cuda.get_device_name(device), torch=torch.__version__,
             memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2 ** 30, 1))
    parts = {"certify": certify, "pgd_step": pgd_step, "diffusion_memory": diffusion_memory, "render": render}
    for name in args.only.split(","):
        if name not in parts:
            raise SystemExit(f"--only {name!r}: choose from {', '.join(PARTS)}")
        started = time.perf_counter()
        try:
            parts[name](args, device)
        except Exception as error:  # noqa: BLE001 - one broken part must not hide the others' figures
            emit(check=name, error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-2000:])
        print(f"# {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
