"""Cost of one PGD-k adversarial training step, side by side with its limits and a peer.

* against (k + 1) × a standard training step on the same model and batch — the cost limit
  of k attack iterations plus the update (goal: ratio <= 1.15);
* against the same training step with ``torchattacks.PGD``/``PGDL2`` making the examples
  (goal: our speed >= 1.0× theirs). Install the peer with ``pip install --no-deps torchattacks``
  (its pinned requests/tqdm would downgrade the environment); ``make bench`` does this.

Usage: python bench/advtrain_pgd.py [--arch tiny_resnet] [--batch 128] [--steps 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from confidently.adversarial import PGDConfig, pgd_attack
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.models import create_model


def timed_together(candidates: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, measuring the candidates in interleaved rounds so load drifts hit all alike."""
    for fn in candidates.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_resnet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--constraint", default="l2", choices=["l2", "linf"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = collect(open_dataset("demo:digits", "train"))
    x, y = images[:args.batch], labels[:args.batch]
    model = create_model(args.arch, 10).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = PGDConfig.training(args.constraint, args.eps, args.steps)

    def update(batch):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch), y).backward()
        optimizer.step()

    def standard_step():
        update(x)

    def ours_step(use_best: bool):
        def step():
            adv = pgd_attack(model, x, y, PGDConfig.training(args.constraint, args.eps, args.steps, use_best=use_best))
            model.train()
            update(adv)
        return step

    candidates = {"standard": standard_step, "ours": ours_step(True), "ours_last": ours_step(False)}
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        kind = torchattacks.PGDL2 if args.constraint == "l2" else torchattacks.PGD
        attack = kind(model, eps=args.eps, alpha=config.alpha, steps=args.steps, random_start=False)

        def peer_step():
            model.eval()
            adv = attack(x, y)
            model.train()
            update(adv)

        candidates["peer"] = peer_step
    seconds = timed_together(candidates, args.repeats)
    standard, ours, ours_last = seconds["standard"], seconds["ours"], seconds["ours_last"]
    limit = (args.steps + 1) * standard
    print(f"{args.arch}, batch {args.batch}, PGD-{args.steps} {args.constraint} eps {args.eps}, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved rounds")
    print(f"standard step                  {standard * 1e3:8.1f} ms")
    print(f"(k+1) x standard (cost limit)  {limit * 1e3:8.1f} ms")
    print(f"confidently PGD step, use_best {ours * 1e3:8.1f} ms   ratio to limit {ours / limit:.2f} (goal <= 1.15)")
    print(f"confidently PGD step, last     {ours_last * 1e3:8.1f} ms   ratio to limit {ours_last / limit:.2f}")
    if torchattacks is None:
        print("torchattacks not installed: pip install --no-deps torchattacks")
        return
    peer = seconds["peer"]
    print(f"torchattacks PGD step          {peer * 1e3:8.1f} ms   our speed vs theirs: {peer / ours:.2f}x with "
          f"use_best, {peer / ours_last:.2f}x without (goal >= 1.0)")


if __name__ == "__main__":
    main()
