"""Ablate's speed: batched LIME against the ``lime`` package, and token dropping against its ideal.

* seconds per LIME explanation of confidently's batched backend (``explain(backend="own")``)
  against the reference package (``backend="lime"``: ``LimeImageExplainer`` with the same
  model, fill, grid segmentation and number of samples T), on the same images (goal: ours
  >= 3× faster). Also the model's forwards alone (the floor neither backend can beat) and
  agreement: the mean top-5 overlap of the two rankings per image, next to the overlap of
  each backend with itself under other seeds (the sampling noise of T perturbations).
  Per image size (``--lime-size``, default 32 and 224): at 32×32 (the demo's size) the
  ``--arch`` model, briefly trained, with ``--patch-size`` 4 (64 features); there its forwards
  dominate and no backend can gain 3×. At an ImageNet-like 224×224 (the demo images
  upsampled) lime's per-perturbation Python masking over the whole image gets expensive:
  ``--lime-patch`` 16 (196 features, the thesis's grid), ``--lime-images`` 2 and a cheap
  model of that input size (``--lime-arch``: by default ``pooled``, the trained 32×32 model
  behind a 224→32 average pool, a forward as cheap as a fast model's on an accelerator; or
  a registry arch built at 224 with random weights, timing only, e.g. ``tiny_vit``).
* the cost of a missingness curve (``missingness_curves``, random order, every k) with
  ``--fill drop`` against black fill on a ViT, next to the ideal ratio Σ_k tokens run with
  black / Σ_k tokens kept with drop (patch tokens; features are the ViT's own patches), and
  the ratio the library's chunks allow once padding is counted: ``MissingnessModel.logits``
  sorts the rows by kept-token count (stable), cuts chunks of ``--batch-size`` (or where the
  count changes) and pads each chunk to its longest row.
  A what-if column runs the same rows in forwards of one kept-token count each (no padding;
  public API only), as certify does.

The 32×32 LIME model is trained briefly (``--train-epochs 0``: random weights) and reused
pooled at 224×224; the curve ViTs keep random weights (timing only). Usage: python bench/ablate_lime.py
[--samples 1000] [--images 8] [--arch tiny_resnet] [--lime-size 32 --lime-size 224]
[--lime-arch pooled|tiny_vit] [--lime-images 2] [--lime-patch 16]
[--vit tiny_vit@32 --vit tiny_vit@64 --vit vit_tiny_patch16_224@224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
from confidently.missingness import (
    PARTIAL_RULES,
    LimeConfig,
    MissingnessModel,
    curve_ks,
    explain,
    make_features,
    make_fill,
    missingness_curves,
    removal_flags,
    removal_order,
    visible_after_removal,
)
from confidently.models import Classifier, create_model, token_keep_mask
from confidently.models.token_drop import vit_patch_size
from confidently.training import TrainConfig, train_classifier
from torch import nn

DATA = "demo:digits?background=noisy"


CLOCK = time.perf_counter


def timed_together(candidates: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Median seconds per call, measuring the candidates in interleaved rounds so load drifts hit all alike,
    and what each returned in its (untimed) warm-up call."""
    results = {name: fn() for name, fn in candidates.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            started = CLOCK()
            fn()
            times[name].append(CLOCK() - started)
    return {name: statistics.median(values) for name, values in times.items()}, results


def top_overlap(a, b, k: int = 5) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over paired explanations."""
    return statistics.mean(len(set(x.ranking[:k].tolist()) & set(y.ranking[:k].tolist())) / k
                           for x, y in zip(a, b, strict=True))


def trained_model(args: argparse.Namespace) -> tuple[Classifier, str]:
    """``--arch`` at its own input size, trained ``--train-epochs`` on the demo digits, and how it was made."""
    model = create_model(args.arch, 10)
    state = "random weights"
    if args.train_epochs > 0:
        train_x, train_y = collect(open_dataset(DATA, "train"))
        test_x, test_y = collect(open_dataset(DATA, "test"))
        train_set = ImageDataset.from_tensors(train_x, train_y)
        train_classifier(model, train_set, TrainConfig(epochs=args.train_epochs, lr=3e-3))
        model.eval()
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        state = f"trained {args.train_epochs} epochs, test accuracy {100 * accuracy:.0f} %"
    return model.eval(), state


def lime_model(size: int, args: argparse.Namespace, trained: tuple[Classifier, str]) -> tuple:
    """The model, its description, the images, patch side and image label of one LIME size.

    At ``--arch``'s own input size: the trained model on ``--images`` test images with ``--patch-size``
    patches. At any other size, ``--lime-images`` test images resized to it with ``--lime-patch`` patches,
    and a cheap model of that input size: ``pooled`` is the trained model behind an average pool down to
    its own size (a forward as cheap as at 32, so the rest of LIME shows, as with a fast model on an
    accelerator); any other ``--lime-arch`` is built at that size with random weights (timing only; a
    ``tiny_vit`` gets tokens of ``--lime-patch`` pixels and ``--vit-depth`` layers).
    """
    base, state = trained
    native = base.input_size[-1]
    if size == native:
        return base, f"{args.arch} ({state})", collect(open_dataset(DATA, "test"))[0][:args.images], \
            args.patch_size, "test images"
    test_x, test_y = collect(open_dataset(DATA, "test"), size)
    which = f"test images upsampled to {size}×{size}"
    if args.lime_arch == "pooled":
        model = Classifier(nn.Sequential(nn.AdaptiveAvgPool2d(native), base.net), arch=f"pooled {base.arch}",
                           arch_kwargs={}, num_classes=base.num_classes, input_size=(base.input_size[0], size, size),
                           mean=base.mean, std=base.std).eval()
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        described = (f"{args.arch} ({state}) behind a {size}→{native} average pool, test accuracy "
                     f"{100 * accuracy:.0f} % at {size}×{size}")
        return model, described, test_x[:args.lime_images], args.lime_patch, which
    kwargs = ({"patch_size": args.lime_patch, "depth": args.vit_depth} if args.lime_arch.startswith("tiny_vit")
              else {})
    model = create_model(args.lime_arch, 10, img_size=size, **kwargs).eval()
    details = "".join(f"; {key} {value}" for key, value in kwargs.items())
    described = f"{args.lime_arch} (random weights, timing only: nothing trained at {size}×{size}{details})"
    return model, described, test_x[:args.lime_images], args.lime_patch, which


def lime_speed(size: int, args: argparse.Namespace, trained: tuple[Classifier, str]) -> None:
    model, described, images, patch_size, which = lime_model(size, args, trained)
    mm = MissingnessModel(model, make_fill(args.fill), batch_size=args.batch_size)
    n = len(images)
    features = [make_features("patch", image, patch_size=patch_size) for image in images]
    config = LimeConfig(samples=args.samples)

    # Random fills draw one seed per perturbation (the same for both backends).
    fill_seeds = ([list(range(i * args.samples, (i + 1) * args.samples)) for i in range(n)] if mm.fill.random
                  else None)

    def run(backend: str, seed: int = 0):
        return explain(backend, mm, images, features, config,
                       [torch.Generator().manual_seed(seed + i) for i in range(n)], fill_seeds)

    # The floor: the T perturbed images of every image, already filled, through the model alone.
    flags = [torch.randint(0, 2, (args.samples, f.count), generator=torch.Generator().manual_seed(i)).bool()
             for i, f in enumerate(features)]
    visible = torch.cat([visible_after_removal(f.labels, z) for f, z in zip(features, flags, strict=True)])
    rows = torch.arange(n).repeat_interleave(args.samples)
    # Filled chunk by chunk (at 224×224 the whole batch at once would peak at several GB).
    filled = None if mm.fill.drops_tokens else [
        mm.fill(images[rows[start:start + args.batch_size]], visible[start:start + args.batch_size],
                list(range(start, min(start + args.batch_size, len(rows)))) if mm.fill.random else None)
        for start in range(0, len(rows), args.batch_size)]

    def forwards_only():
        if filled is None:  # drop: the token-dropping forwards are the model
            mm.logits(images, rows, visible)
            return
        with torch.no_grad():
            for chunk in filled:
                model(chunk)

    seconds, results = timed_together({"own": lambda: run("own"), "lime": lambda: run("lime"),
                                       "floor": forwards_only}, args.repeats)
    own, lime, floor = (seconds[name] / n for name in ("own", "lime", "floor"))
    ours, theirs = results["own"], results["lime"]  # seeded: the warm-up's explanations are every round's
    ours_again, theirs_again = run("own", seed=10_000), run("lime", seed=10_000)
    print(f"LIME {size}×{size}: {described}, {n} {DATA} {which}, {patch_size}×{patch_size} patches "
          f"({features[0].count} features), T={args.samples}, {args.fill} fill, batch {args.batch_size}, "
          f"{args.threads} thread(s), {args.clock} clock, median of {args.repeats} interleaved rounds")
    print(f"confidently (own)            {own:8.3f} s/explanation")
    print(f"lime package                 {lime:8.3f} s/explanation")
    print(f"model forwards alone         {floor:8.3f} s/explanation   (lime / floor = {lime / floor:.2f}x: "
          f"the most any backend can gain on this model)")
    print(f"ratio                        {lime / own:8.2f}x lime's speed (goal >= 3x); "
          f"own spends {100 * floor / own:.0f} % of its time in the model")
    print(f"top-5 overlap                {top_overlap(ours, theirs):8.2f} own vs lime; sampling noise: "
          f"{top_overlap(ours, ours_again):.2f} own vs own, {top_overlap(theirs, theirs_again):.2f} lime vs lime "
          f"(other seeds)")
    print(f"mean R²                      {statistics.mean(e.r2 for e in ours):8.3f} own; "
          f"{statistics.mean(e.r2 for e in theirs):.3f} lime")


def curve_rows(features, orders, ks):
    """The rows ``missingness_curves`` runs after the clean pass (image-major, k ascending, k = 0 reused)."""
    rows, masks = [], []
    for i, (feats, order) in enumerate(zip(features, orders, strict=True)):
        flags = removal_flags(order, ks, feats.count)
        visible = visible_after_removal(feats.labels, flags)
        for j in range(len(ks)):
            if bool(flags[j].any()):
                rows.append(i)
                masks.append(visible[j])
    return torch.tensor(rows), torch.stack(masks)


def curve_speed(spec: str, args: argparse.Namespace) -> tuple:
    arch, _, size_text = spec.partition("@")
    size = int(size_text) if size_text else None
    kwargs = {"depth": args.vit_depth} if arch.startswith("tiny_vit") else {}
    model = create_model(arch, 10, img_size=size, **kwargs).eval()
    size = model.input_size[-1]
    patch = vit_patch_size(model.net)
    images = collect(open_dataset(DATA, "test"), size)[0][:args.curve_images]
    n = len(images)
    features = [make_features("patch", image, patch_size=patch) for image in images]
    count = features[0].count
    ks = curve_ks(count, args.step or max(1, count // 64))
    orders = [removal_order("random", count, None, torch.Generator().manual_seed(i)) for i in range(n)]
    black = MissingnessModel(model, make_fill("black"), batch_size=args.batch_size)
    drop = MissingnessModel(model, make_fill("drop"), batch_size=args.batch_size)

    # Token counts: black runs every token of every row; drop keeps the tokens no removed pixel touches.
    rows, masks = curve_rows(features, orders, ks)
    kept = token_keep_mask(masks, patch, PARTIAL_RULES[drop.partial]).sum(1)
    tokens = (size // patch) ** 2
    clean = n * tokens  # the clean pass (k = 0) runs all tokens with either fill
    ideal = (clean + len(rows) * tokens) / (clean + int(kept.sum()))
    # The library's padding: its own forward chunks (rows sorted by kept-token count, cut at batch_size or
    # where the count changes), each padded to its longest row (the clean pass runs all tokens, no padding).
    order = torch.sort(kept, stable=True).indices
    padded = sum(int(kept[index].max()) * len(index) for index in drop.forward_chunks(len(kept), order, kept))
    chunked = (clean + len(rows) * tokens) / (clean + padded)
    every = torch.arange(n)
    all_visible = torch.ones(n, size, size, dtype=torch.bool)

    def grouped_drop():  # what-if: the same rows, each forward holding rows of one kept-token count only
        drop.logits(images, every, all_visible)
        rows, masks = curve_rows(features, orders, ks)
        kept = token_keep_mask(masks, patch, PARTIAL_RULES[drop.partial]).sum(1)
        for value in torch.unique(kept).tolist():
            group = torch.nonzero(kept == value).flatten()
            drop.logits(images, rows[group], masks[group])

    seconds, _ = timed_together({
        "black": lambda: missingness_curves(black, images, features, orders, ks),
        "drop": lambda: missingness_curves(drop, images, features, orders, ks),
        "grouped": grouped_drop,
    }, args.repeats)
    measured = seconds["black"] / seconds["drop"]
    what_if = seconds["black"] / seconds["grouped"]
    return (f"{arch}@{size}", tokens, len(ks), n, seconds["black"], seconds["drop"], measured, ideal,
            chunked, what_if)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tiny_resnet", help="LIME model (any registry or timm name)")
    parser.add_argument("--train-epochs", type=int, default=2, help="LIME model training (0: random weights)")
    parser.add_argument("--fill", default="black", help="LIME fill for both backends")
    parser.add_argument("--images", type=int, default=8, help="LIME images at 32×32")
    parser.add_argument("--samples", type=int, default=1000, help="LIME perturbations T per image")
    parser.add_argument("--patch-size", type=int, default=4, help="LIME grid feature side (pixels) at 32×32")
    parser.add_argument("--lime-size", type=int, action="append", default=None,
                        help="LIME image side, repeatable (default: 32 and 224); sizes other than --arch's own "
                             "(32) resize the test images and use --lime-arch, --lime-images, --lime-patch")
    parser.add_argument("--lime-arch", default="pooled",
                        help="LIME model at other sizes: pooled (the trained --arch behind an average pool to "
                             "32×32) or an arch built at that size with random weights (tiny_vit: --lime-patch "
                             "tokens, --vit-depth layers, ~2 ms/image at 224 on one thread; tiny_resnet ~19 ms)")
    parser.add_argument("--lime-images", type=int, default=2, help="LIME images at other sizes")
    parser.add_argument("--lime-patch", type=int, default=16, help="LIME grid feature side (pixels) at other sizes")
    parser.add_argument("--vit", action="append", default=None,
                        help="curve ViT as ARCH[@SIZE], repeatable (default: tiny_vit@32 and tiny_vit@64; "
                             "a bigger case: vit_tiny_patch16_224@224 with --curve-images 2)")
    parser.add_argument("--vit-depth", type=int, default=2,
                        help="depth of the tiny_vit curve models (and of a tiny_vit --lime-arch)")
    parser.add_argument("--curve-images", type=int, default=8)
    parser.add_argument("--step", type=int, default=0, help="curve k step (0: about 64 steps)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", default="auto", choices=["auto", "cpu", "wall"],
                        help="cpu: this process's CPU seconds (robust on a shared machine, one thread only); "
                             "auto: cpu with one thread, else wall")
    parser.add_argument("--skip-lime", action="store_true")
    parser.add_argument("--skip-curves", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    global CLOCK
    args.clock = ("cpu" if args.threads == 1 else "wall") if args.clock == "auto" else args.clock
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if not args.skip_lime:
        trained = trained_model(args)
        for index, size in enumerate(args.lime_size or [32, 224]):
            if index:
                print()
            lime_speed(size, args, trained)
    if args.skip_curves:
        return
    results = [curve_speed(spec, args) for spec in args.vit or ["tiny_vit@32", "tiny_vit@64"]]
    print()
    print(f"missingness curve, random order, fill drop vs black (random weights, depth {args.vit_depth} for "
          f"tiny_vit), batch {args.batch_size}, {args.threads} thread(s), {args.clock} clock, "
          f"median of {args.repeats} interleaved rounds")
    print(f"{'model':<26}{'tokens':>7}{'ks':>5}{'imgs':>5}{'black s':>9}{'drop s':>9}{'measured':>10}"
          f"{'ideal':>8}{'% ideal':>9}{'chunked':>9}{'grouped':>9}")
    for name, tokens, ks, n, black_s, drop_s, measured, ideal, chunked, what_if in results:
        print(f"{name:<26}{tokens:>7}{ks:>5}{n:>5}{black_s:>9.3f}{drop_s:>9.3f}{measured:>9.2f}x"
              f"{ideal:>7.2f}x{100 * measured / ideal:>8.0f}%{chunked:>8.2f}x{what_if:>8.2f}x")
    print("measured = black s / drop s; ideal = Σ_k tokens run with black / Σ_k tokens kept with drop; "
          "chunked = the ideal after the library's padding (rows sorted by kept-token count, cut into forwards "
          "of batch size or where the count changes, each padded to its longest row); "
          "grouped = measured with forwards of equal kept-token counts only (what-if, no padding)")


if __name__ == "__main__":
    main()
