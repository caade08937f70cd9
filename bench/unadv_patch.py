"""Patch-optimisation speed against its cost limit (not a test).

One patch step = sample placements, composite, forward, backward to the patches, sign step. Its
cost limit is one forward + backward of the same model on the same batch (gradient to the input):
everything else should be small. Prints seconds per step for both and the ratio (goal ≥ 0.8×).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.models import create_model
from confidently.unadversarial import PatchConfig, Placement, init_patches, train_patches, training_batches


def per_step(run, steps: int) -> float:
    run(2)  # warm-up
    started = time.process_time()
    run(steps)
    return (time.process_time() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_resnet")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--patch-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = open_dataset("demo:digits", "train")
    images, labels = collect(dataset)
    model = create_model(args.arch, 10).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    patches = init_patches(10, 3, args.patch_size, generator)
    config = PatchConfig(steps=0, batch_size=args.batch_size, lr=0.02)

    def patch_steps(count: int) -> None:
        steps = PatchConfig(count, config.batch_size, config.lr)
        train_patches(model, training_batches(dataset, model, steps, 0), patches, Placement(), steps, generator)

    def limit_steps(count: int) -> None:
        for _ in range(count):
            index = torch.randint(0, len(images), (args.batch_size,), generator=generator)
            x = images[index].clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), labels[index])
            torch.autograd.grad(loss, x)

    results = []
    for _ in range(3):  # interleaved rounds, median
        results.append((per_step(limit_steps, args.steps), per_step(patch_steps, args.steps)))
    limit = sorted(r[0] for r in results)[1]
    ours = sorted(r[1] for r in results)[1]
    print(f"{args.arch}, batch {args.batch_size}, patch {args.patch_size}×{args.patch_size} on 32×32, "
          f"{args.threads} thread(s), CPU clock, median of 3 rounds of {args.steps} steps")
    print(f"{'cost limit (forward + backward to the input)':<48}{limit * 1000:>9.1f} ms/step")
    print(f"{'unadv-patch step (placements, composite, sign)':<48}{ours * 1000:>9.1f} ms/step")
    print(f"{'ratio (goal >= 0.8x)':<48}{limit / ours:>9.2f}x")


if __name__ == "__main__":
    main()
