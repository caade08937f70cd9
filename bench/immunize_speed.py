"""Immunization cost against its limits (not a test).

1. Encoder attack: seconds per image for N PGD steps against the cost limit N × (one VAE-encoder
   forward + backward to the pixels) on the same image — everything else (projection, sign step,
   the target latent, the initial and final loss) should be small. Goal: ratio ≤ 1.1×.
2. Diffusion attack: peak memory of one PGD iteration (K unrolled denoising steps, forward and
   backward) with gradient checkpointing (every denoising step, and diffusers' per-block checkpointing
   in the VAE and UNet) against without it. Goal: ratio ≤ ⅓. On CPU the peak is the rise of the
   process's peak resident set (VmHWM, reset after loading and a warm-up) over its resident set then,
   each setting measured in a fresh process with a fixed glibc mmap threshold (freed blocks go back
   to the system at once, so the resident set follows the live tensors); on CUDA it is
   ``torch.cuda.max_memory_allocated``. Also prints seconds per iteration (checkpointing recomputes
   each step's forward, and each block's inside it: expect ~1.5× time).
3. Evaluation edit: seconds per photo through diffusers' pipeline (``immunize edit --backend pipeline``,
   the default) against the toolbox's own loop (``--backend own``), same seed, steps and guidance,
   interleaved, median of 3. Goal: pipeline / own ≤ 1.1× (the pipeline adds input checks and pre/post
   processing around the same UNet calls).

4. Batching (``--batch-size``): encoder-attack seconds per photo at batch 1 (each photo alone) against
   batch ``--batch`` (default 4; one VAE forward + backward per step for the whole batch), same photos
   and results (tests/immunize/test_batching.py). On CPU the work per photo is the same either way, so
   expect ~1×; the win is on a GPU, where one photo leaves most of the device idle.

Runs on a tiny random model written on the fly (``--size``, ``--model-dir`` for a real one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def blob(size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 6, 6, generator=generator)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def encoder_speed(model_dir: Path, size: int, steps: int, device: str) -> tuple[float, float]:
    from confidently.immunize import PGDConfig, Request, immunize, load_ldm

    ldm = load_ldm(model_dir, device, "fp32", parts=("vae",))
    x = blob(size).to(device)
    request = Request(x=x, mode="img2img", key="bench")

    def sync() -> None:
        if ldm.device.type == "cuda":
            torch.cuda.synchronize()

    def limit(count: int) -> None:
        target = torch.zeros_like(ldm.encode_mean(x * 2 - 1))
        for _ in range(count):
            pixels = x.detach().requires_grad_(True)
            loss = (ldm.encode_mean(pixels * 2 - 1) - target).pow(2).sum()
            torch.autograd.grad(loss, pixels)

    def ours(count: int) -> None:
        immunize(ldm, request, "encoder", PGDConfig(steps=count))

    clock = time.perf_counter if ldm.device.type == "cuda" else time.process_time
    rounds = []
    for _ in range(3):  # interleaved, median
        pair = []
        for run in (limit, ours):
            run(2)
            sync()
            started = clock()
            run(steps)
            sync()
            pair.append(clock() - started)
        rounds.append(pair)
    return sorted(r[0] for r in rounds)[1], sorted(r[1] for r in rounds)[1]


def batch_speed(model_dir: Path, size: int, steps: int, device: str, batch: int) -> dict[int, float]:
    """Encoder attack, seconds per photo: each of ``batch`` photos alone, then all of them in one batch."""
    from confidently.immunize import PGDConfig, Request, immunize_batch, load_ldm

    ldm = load_ldm(model_dir, device, "fp32", parts=("vae",))
    requests = [Request(x=blob(size, seed).to(device), mode="img2img", key=f"bench/{seed}") for seed in range(batch)]

    def run(together: int, count: int) -> None:
        for at in range(0, batch, together):
            immunize_batch(ldm, requests[at:at + together], "encoder", PGDConfig(steps=count))
        if ldm.device.type == "cuda":
            torch.cuda.synchronize()

    return median_per_photo(run, (1, batch), steps, batch, ldm.device)


def median_per_photo(run, arms, count: int, photos: int, device: torch.device) -> dict:
    """Seconds per photo of ``run(arm, count)`` for each arm: three interleaved rounds after a warm-up, median
    (process time on the CPU, wall time on a GPU)."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    rounds: dict = {arm: [] for arm in arms}
    for _ in range(3):
        for arm in rounds:
            run(arm, 1)  # warm-up
            started = clock()
            run(arm, count)
            rounds[arm].append((clock() - started) / photos)
    return {arm: sorted(times)[1] for arm, times in rounds.items()}


def edit_speed(model_dir: Path, size: int, steps: int, device: str, photos: int = 2) -> dict[str, float]:
    """Seconds per photo of one evaluation edit, own loop vs diffusers' pipeline (built once, as `edit` does)."""
    from confidently.immunize import EditConfig, conditioning, edit_image, load_ldm
    from confidently.immunize.pipelines import build_pipeline

    ldm = load_ldm(model_dir, device, "fp32")
    cond = conditioning(ldm.text, "a red car", "")
    mask = torch.zeros(1, size, size)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    config = EditConfig(ldm.mode, steps=steps)
    build_pipeline(ldm, ldm.mode)
    images = [blob(size, seed)[0] for seed in range(photos)]

    def run(backend: str, count: int) -> None:
        for index in range(count):
            edit_image(ldm, images[index % photos], cond, config, index, mask, backend=backend)
        if ldm.device.type == "cuda":
            torch.cuda.synchronize()

    return median_per_photo(run, ("own", "pipeline"), photos, photos, ldm.device)


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux: ``echo 5 > /proc/self/clear_refs``); return the current RSS.

    Without it (other systems) ``ru_maxrss`` is the peak since start, so loading can hide the iteration's peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS") or 0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_worker(model_dir: Path, size: int, denoise_steps: int, checkpointing: bool, device: str) -> dict:
    """One fresh process: load, warm up on a small image, then one diffusion-attack iteration at full size."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from confidently.immunize import EditConfig, conditioning, edit_forward, load_ldm

    ldm = load_ldm(model_dir, device, "fp32")
    cond = conditioning(ldm.text, "", "")
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    config = EditConfig(ldm.mode, steps=denoise_steps, checkpointing=checkpointing)

    def iteration(pixels: torch.Tensor, m: torch.Tensor) -> None:
        pixels = pixels.to(ldm.device).requires_grad_(True)
        out = edit_forward(ldm, pixels, cond, config, torch.Generator().manual_seed(0),
                           mask=m if ldm.mode == "inpaint" else None)
        torch.autograd.grad(out.pow(2).sum(), pixels)

    small = ldm.downsampling * 4
    iteration(blob(small), torch.nn.functional.interpolate(mask, size=(small, small)))  # warm-up, allocator
    clock = time.perf_counter if ldm.device.type == "cuda" else time.process_time
    if ldm.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    started = clock()
    iteration(blob(size), mask)
    if ldm.device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = peak_rss() - base
    return {"peak_bytes": peak, "seconds": clock() - started}


def diffusion_memory(model_dir: Path, size: int, denoise_steps: int, device: str) -> dict[bool, dict]:
    out = {}
    for checkpointing in (True, False):
        command = [sys.executable, __file__, "--worker", "--model-dir", str(model_dir), "--size", str(size),
                   "--denoise-steps", str(denoise_steps), "--device", device]
        if checkpointing:
            command.append("--checkpointing")
        # a fixed mmap threshold: glibc returns big freed blocks at once, so ru_maxrss tracks live tensors
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        out[checkpointing] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def print_batch(args: argparse.Namespace, batched: dict[int, float]) -> None:
    clock = "wall clock" if args.device.startswith("cuda") else "CPU clock"
    print(f"encoder attack --batch-size, {args.size}×{args.size}, {args.steps} steps, {args.device}, {clock}, "
          "median of 3 rounds (the win is on a GPU; on CPU the work per photo is the same)")
    for together, seconds in batched.items():
        print(f"{f'  batch {together}':<56}{seconds:>9.3f} s/photo")
    print(f"{'  speed-up batch / alone':<56}{batched[1] / batched[args.batch]:>9.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="A local diffusers LDM (default: tiny).")
    parser.add_argument("--size", type=int, default=128, help="Image side for the encoder attack.")
    parser.add_argument("--memory-size", type=int, default=128, help="Image side for the memory measurement.")
    parser.add_argument("--steps", type=int, default=50, help="Encoder-attack PGD steps.")
    parser.add_argument("--denoise-steps", type=int, default=4, help="K, unrolled in the diffusion attack.")
    parser.add_argument("--edit-size", type=int, default=64, help="Image side for the edit timing.")
    parser.add_argument("--edit-steps", type=int, default=20, help="Denoising steps of the edit timing.")
    parser.add_argument("--only-edit", action="store_true", help="Only the edit timing (own vs pipeline).")
    parser.add_argument("--batch", type=int, default=4, help="Photos per batch for the --batch-size timing.")
    parser.add_argument("--only-batch", action="store_true", help="Only the --batch-size timing.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(memory_worker(args.model_dir, args.size, args.denoise_steps, args.checkpointing,
                                       args.device)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if model_dir is None:
            from confidently.immunize import write_tiny_model

            model_dir = write_tiny_model(Path(scratch) / "tiny", size=args.size, unet="inpaint", seed=0)
            edit_dir = model_dir if args.edit_size == args.size else write_tiny_model(
                Path(scratch) / "tiny-edit", size=args.edit_size, unet="inpaint", seed=0)
        else:
            edit_dir = model_dir
        batched = None if args.only_edit else batch_speed(model_dir, args.size, args.steps, args.device, args.batch)
        if args.only_batch:
            print_batch(args, batched)
            return
        edits = edit_speed(edit_dir, args.edit_size, args.edit_steps, args.device)
        if not args.only_edit:
            limit, ours = encoder_speed(model_dir, args.size, args.steps, args.device)
            memory = diffusion_memory(model_dir, args.memory_size, args.denoise_steps, args.device)
    clock = "wall clock" if args.device.startswith("cuda") else "CPU clock"
    print(f"model {args.model_dir or 'tiny random (spec §3.5)'}, {args.device}, {args.threads} thread(s), {clock}")
    print(f"evaluation edit, {args.edit_size}×{args.edit_size}, {args.edit_steps} DDIM steps, guidance 7.5, "
          "median of 3 rounds")
    print(f"{'  immunize edit --backend own':<56}{edits['own']:>9.3f} s/photo")
    print(f"{'  immunize edit --backend pipeline (diffusers)':<56}{edits['pipeline']:>9.3f} s/photo")
    print(f"{'  ratio pipeline / own (goal <= 1.1x)':<56}{edits['pipeline'] / edits['own']:>9.3f}x")
    if args.only_edit:
        return
    print_batch(args, batched)
    print(f"encoder attack, {args.size}×{args.size}, {args.steps} steps, median of 3 rounds")
    print(f"{'  cost limit (steps × encoder forward + backward)':<56}{limit:>9.3f} s/image")
    print(f"{'  immunize encoder':<56}{ours:>9.3f} s/image")
    print(f"{'  ratio (goal <= 1.1x)':<56}{ours / limit:>9.3f}x")
    on, off = memory[True], memory[False]
    print(f"diffusion attack, {args.memory_size}×{args.memory_size}, K={args.denoise_steps}, one PGD iteration "
          f"(forward + backward), fresh process each")
    print(f"{'  peak memory without checkpointing':<56}{off['peak_bytes'] / 2**20:>9.1f} MiB "
          f"({off['seconds']:.2f} s)")
    print(f"{'  peak memory with checkpointing (steps + blocks)':<56}{on['peak_bytes'] / 2**20:>9.1f} MiB "
          f"({on['seconds']:.2f} s)")
    print(f"{'  memory ratio (goal <= 0.33x)':<56}{on['peak_bytes'] / max(off['peak_bytes'], 1):>9.3f}x")
    print(f"{'  time ratio (checkpointing / none)':<56}{on['seconds'] / max(off['seconds'], 1e-9):>9.2f}x")


if __name__ == "__main__":
    main()
