"""Cost of one PGD-k adversarial training step, side by side with its limits and a peer.

* against (k + 1) × a standard training step on the same model and batch — the cost limit
  of k attack iterations plus the update (goal: ratio <= 1.0: an attack step needs no weight
  gradients and no optimizer step);
* against the same training step with ``torchattacks.PGD``/``PGDL2`` making the examples
  (goal: our speed >= 1.1× theirs). Install the peer with ``pip install --no-deps torchattacks``
  (its pinned requests/tqdm would downgrade the environment); ``make bench`` does this.
* the same in mixed precision (bf16 autocast in the attack's passes, what ``--amp`` does on a GPU;
  torchattacks attacking the same autocast model), where the CPU has bf16 kernels. The update
  stays fp32, so the limit is the fp32 one.

The candidates run in interleaved rounds, timed by the process's CPU time (``--clock cpu``, the
default: other users' load on a shared machine does not inflate it) or by the wall clock.

Usage: python bench/advtrain_pgd.py [--arch tiny_resnet] [--batch 128] [--steps 3] [--repeats 7] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from confidently.adversarial import MixedPrecision, PGDConfig, pgd_attack
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.models import create_model

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def timed_together(candidates: dict, repeats: int, clock) -> dict[str, float]:
    """Median seconds per call, measuring the candidates in interleaved rounds so load drifts hit all alike."""
    for fn in candidates.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            started = clock()
            fn()
            times[name].append(clock() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def bf16_on_cpu() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check); emulated bf16 would only measure the emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_resnet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--constraint", default="l2", choices=["l2", "linf"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="cpu", choices=sorted(CLOCKS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = collect(open_dataset("demo:digits", "train"))
    x, y = images[:args.batch], labels[:args.batch]
    model = create_model(args.arch, 10).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = PGDConfig.training(args.constraint, args.eps, args.steps)
    mixed = bf16_on_cpu()

    def update(batch):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(batch), y).backward()
        optimizer.step()

    def standard_step():
        update(x)

    def ours_step(use_best: bool, autocast: torch.dtype | None = None):
        def step():
            attack = PGDConfig.training(args.constraint, args.eps, args.steps, use_best=use_best)
            adv = pgd_attack(model, x, y, attack, autocast=autocast)
            model.train()
            update(adv)
        return step

    candidates = {"standard": standard_step, "ours": ours_step(True), "ours_last": ours_step(False)}
    if mixed:
        candidates["ours_bf16"] = ours_step(True, torch.bfloat16)
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        kind = torchattacks.PGDL2 if args.constraint == "l2" else torchattacks.PGD

        def peer_step(attacked: torch.nn.Module):
            attack = kind(attacked, eps=args.eps, alpha=config.alpha, steps=args.steps, random_start=False)

            def step():
                model.eval()
                adv = attack(x, y)
                model.train()
                update(adv)
            return step

        candidates["peer"] = peer_step(model)
        if mixed:
            candidates["peer_bf16"] = peer_step(MixedPrecision(model, torch.bfloat16))
    seconds = timed_together(candidates, args.repeats, CLOCKS[args.clock])
    standard, ours, ours_last = seconds["standard"], seconds["ours"], seconds["ours_last"]
    limit = (args.steps + 1) * standard
    print(f"{args.arch}, batch {args.batch}, PGD-{args.steps} {args.constraint} eps {args.eps}, "
          f"{args.threads} thread(s), median {args.clock} time of {args.repeats} interleaved rounds")
    print(f"standard step                  {standard * 1e3:8.1f} ms")
    print(f"(k+1) x standard (cost limit)  {limit * 1e3:8.1f} ms")
    print(f"confidently PGD step, use_best {ours * 1e3:8.1f} ms   ratio to limit {ours / limit:.2f} (goal <= 1.0)")
    print(f"confidently PGD step, last     {ours_last * 1e3:8.1f} ms   ratio to limit {ours_last / limit:.2f}")
    if mixed:
        print(f"  attack in bf16, use_best     {seconds['ours_bf16'] * 1e3:8.1f} ms   ratio to limit "
              f"{seconds['ours_bf16'] / limit:.2f} (goal <= 1.0)")
    else:
        print("  (no native bf16 on this CPU: the mixed-precision rows are left out)")
    if torchattacks is None:
        print("torchattacks not installed: pip install --no-deps torchattacks")
        return
    peer = seconds["peer"]
    print(f"torchattacks PGD step          {peer * 1e3:8.1f} ms   our speed vs theirs: {peer / ours:.2f}x with "
          f"use_best, {peer / ours_last:.2f}x without (goal >= 1.1)")
    if mixed:
        print(f"  both attacks in bf16         {seconds['peer_bf16'] * 1e3:8.1f} ms   our speed vs theirs: "
              f"{seconds['peer_bf16'] / seconds['ours_bf16']:.2f}x with use_best (goal >= 1.1)")


if __name__ == "__main__":
    main()
