"""`ablate`: remove image features without missingness bias; missingness-bias curves, LIME,
LIME consistency across baseline colours, the top-k faithfulness test, and ROAR-style retraining."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from confidently import __version__
from confidently.cli import (
    FIT_DATA_OPTIONS,
    SYNC_BN_OPTION,
    Common,
    common_options,
    examples,
    input_source,
    run_app,
    stream_batches,
    tool_app,
)
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.io.atomic import guard_output, write_json_atomic
from confidently.io.records import Collector, RecordReader, RecordWriter
from confidently.recipes import list_recipes, recipe_config
from confidently.run.console import console
from rich.table import Table

if TYPE_CHECKING:  # the heavy modules load inside the commands that use them, so --help starts without torch
    import torch
    from confidently.missingness import MissingnessModel
    from confidently.models.classifier import Classifier

app = tool_app("ablate", "Feature removal without missingness bias: curves, LIME, consistency, top-k test.")


# ----------------------------------------------------------------------------- shared by the commands


def open_model(path: Path, common: Common) -> Classifier:
    from confidently.models import load_model
    from confidently.run.device import resolve_device

    return load_model(path, resolve_device(common.device))


def results_collector() -> Collector:
    """Writes records and keeps their ``ablate`` results for a summary."""
    return Collector(lambda record: record.get("ablate"))


def write_json(summary: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        write_json_atomic(path, {"tool": "ablate", **summary})


def read_records(source: str | None, what: str) -> RecordReader:
    return RecordReader(input_source(source, what), require_image=True, yield_errors=True)


UNIT_OPTION = typer.Option("patch", "--unit", help="Removal units: patch, superpixel or boxes (a record's list).")
PATCH_OPTION = typer.Option(16, "--patch-size", min=1, help="Grid patch side q (--unit patch).")
RAGGED_OPTION = typer.Option(False, "--ragged", help="Allow a q that does not divide the image.")
SUPERPIXELS_OPTION = typer.Option(150, "--superpixels", min=2, help="SLIC segments asked for (--unit superpixel).")
SEGMENTS_OPTION = typer.Option(None, "--segments", help="Precomputed label maps (safetensors 'segments' N×H×W, ids).")
FILL_HELP = "black, mean, color:R,G,B, random-color, random-noise, blur, or drop (ViTs: drop the tokens)."
PARTIAL_OPTION = typer.Option("drop", "--partial", help="drop: drop a token when any of its pixels is removed; "
                              "keep: keep it while any pixel is visible.")


def missingness(model: Classifier, fill: str, partial: str, batch_size: int) -> MissingnessModel:
    from confidently.missingness import MissingnessModel, make_fill

    return MissingnessModel(model, make_fill(fill, model.mean), batch_size,
                            partial)


# ----------------------------------------------------------------------------- order


@app.command(epilog=examples("""
    # 16 test digits and a tiny ResNet to study (two epochs: about 90 % accurate)
    dataset export demo:digits --split test --limit 16 --out digits > digits.jsonl
    advtrain train --data demo:digits --split train --arch tiny_resnet --epochs 2 --lr 0.01 \\
      --out cnn.safetensors > /dev/null
    # removal orders of the 4×4 patches by the ResNet's saliency, stored once so every model meets the same order
    ablate order digits.jsonl --ref-model cnn.safetensors --order saliency --patch-size 4 \\
      --out orders.safetensors > /dev/null
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def order(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          order_name: str = typer.Option("random", "--order", help="random, saliency or saliency-reverse."),
          ref_model: Path = typer.Option(None, "--ref-model", "--model",
                                         help="Reference model whose saliency ranks features."),
          unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
          superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
          out: Path = typer.Option(..., "--out", help="orders.safetensors (orders int32 N×F, scores, counts)."),
          force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
          *, common: Common) -> None:
    """Removal orders, stored once so every model is tested on the same order."""
    from confidently.io.artifacts import artifact_metadata, save_artifact
    from confidently.missingness import Inputs, Orders
    from confidently.missingness.jobs import OrderJob
    from confidently.run.device import resolve_device

    guard_output(out, "ablate", force=force)
    orders = Orders(order_name, None, ref_model, resolve_device(common.device), common.seed, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, orders.ref)
    job = OrderJob(orders, inputs, common.seed)
    writer = Collector(job.keep)
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="ordering")
    save_artifact(out, job.artifact(writer.kept), artifact_metadata(
        tool="ablate", kind="orders", config=common.config, seed=common.seed, ids=[i for i, _, _ in writer.kept],
        order=orders.name, ref_model=str(ref_model) if orders.ref is not None else None, **inputs.describe()))
    console.log(f"wrote {len(writer.kept)} {orders.name} orders to {out}")


# ----------------------------------------------------------------------------- curve


@app.command(epilog=examples("""
    # missingness-bias curves along the stored orders: the ResNet with black patches (summary to cnn.json)
    ablate curve digits.jsonl --model cnn.safetensors --fill black --orders orders.safetensors --patch-size 4 \\
      --step 4 --summary cnn.json > cnn-curve.jsonl
    # a tiny ViT drops the removed patches' tokens instead: nothing is painted in (one epoch: a smoke test)
    advtrain train --data demo:digits --split train --arch tiny_vit --epochs 1 --out vit.safetensors > /dev/null
    ablate curve digits.jsonl --model vit.safetensors --fill drop --orders orders.safetensors --patch-size 4 \\
      --step 4 --summary vit.json > vit-curve.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def curve(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          model_path: Path = typer.Option(..., "--model", help="Classifier (.safetensors)."),
          fill: str = typer.Option("black", "--fill", help=FILL_HELP),
          partial: str = PARTIAL_OPTION,
          orders_path: Path = typer.Option(None, "--orders", help="Orders from `ablate order --out`."),
          order_name: str = typer.Option(None, "--order", help="random (default), saliency, saliency-reverse."),
          ref_model: Path = typer.Option(None, "--ref-model", help="Saliency reference for --order saliency*."),
          step: int = typer.Option(2, "--step", min=1),
          kmax: int = typer.Option(None, "--kmax", min=0, help="Last k (default: every feature)."),
          unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
          superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
          summary: Path = typer.Option(None, "--summary", help="Write the dataset summary (JSON) here."),
          class_similarity: Path = typer.Option(None, "--class-similarity",
                                                help="C×C class similarity ('sim'), e.g. WordNet Wu–Palmer."),
          force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
          *, common: Common) -> None:
    """Missingness-bias curves: predictions as the first k features of an order are removed."""
    from confidently.missingness import Inputs, Orders, summarize_curves
    from confidently.missingness.jobs import CurveJob

    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    orders = Orders(order_name, orders_path, ref_model, mmodel.device, common.seed, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    similarity = load_similarity(class_similarity, model.num_classes)
    job = CurveJob(mmodel, orders, inputs, common.seed, step, kmax, str(model_path), fill, partial)
    writer = results_collector()
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="curves")
    if not writer.kept:
        return
    result = summarize_curves(writer.kept, model.num_classes, None, similarity)  # as `summarize` computes it
    result["config"] = common.config
    write_json(result, summary)
    show_curve(result)


def load_similarity(path: Path | None, num_classes: int) -> torch.Tensor | None:
    from confidently.io.artifacts import load_artifact

    if path is None:
        return None
    tensors, _ = load_artifact(path)
    sim = tensors.get("sim")
    if sim is None or tuple(sim.shape) != (num_classes, num_classes):
        raise InvalidInput(f"{path}: expected a 'sim' tensor of shape {num_classes}×{num_classes} "
                           f"(got {None if sim is None else list(sim.shape)})")
    return sim.float()


def show_curve(summary: dict[str, Any]) -> None:
    table = Table("k", "unchanged", "class entropy (norm)", "p(orig)",
                  title=f"missingness bias: fill {summary['fill']}, order {summary['order']}, n={summary['n']}")
    ks = summary["ks"]
    shown = sorted({0, *ks[:: max(1, len(ks) // 8)], ks[-1]})
    for j, k in enumerate(ks):
        if k in shown:
            table.add_row(str(k), f"{summary['frac_unchanged'][j]:.3f}", f"{summary['class_entropy_norm'][j]:.3f}",
                          f"{summary['p_orig_mean'][j]:.3f}")
    console.print(table)


# ----------------------------------------------------------------------------- lime


LIME_OPTIONS = {
    "samples": typer.Option(1000, "--samples", min=2, help="Perturbations per image T."),
    "kernel_width": typer.Option(0.25, "--kernel-width"),
    "ridge_alpha": typer.Option(1.0, "--ridge-alpha"),
    "target": typer.Option("prob", "--target", help="prob (the reference code) or logit (the thesis text)."),
    "include_original": typer.Option(True, "--include-original/--no-include-original",
                                     help="z_0 = all features kept (as the lime package)."),
    "backend": typer.Option("own", "--backend", help="own (batched) or lime (the reference package)."),
}


@app.command(epilog=examples("""
    # LIME of the ResNet over 8×8 patches filled with the mean colour, 200 perturbations per image;
    # the rankings (lime-cnn.safetensors) are what `topk` tests
    ablate lime digits.jsonl --model cnn.safetensors --fill mean --patch-size 8 --samples 200 \\
      --out lime-cnn.safetensors > lime-cnn.jsonl
    # the ViT dropping tokens, explaining the logit (the thesis text), with the reference lime package
    head -4 digits.jsonl | ablate lime --model vit.safetensors --fill drop --patch-size 8 --samples 100 \\
      --target logit --backend lime > lime-vit.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def lime(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
         model_path: Path = typer.Option(..., "--model"),
         fill: str = typer.Option("black", "--fill", help=FILL_HELP),
         partial: str = PARTIAL_OPTION,
         samples: int = LIME_OPTIONS["samples"], kernel_width: float = LIME_OPTIONS["kernel_width"],
         ridge_alpha: float = LIME_OPTIONS["ridge_alpha"], target: str = LIME_OPTIONS["target"],
         include_original: bool = LIME_OPTIONS["include_original"], backend: str = LIME_OPTIONS["backend"],
         unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
         superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
         out: Path = typer.Option(None, "--out", help="scores.safetensors (scores, ranking, intercept, pred0)."),
         force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
         *, common: Common) -> None:
    """LIME explanations under the chosen missingness; rankings for the top-k test."""
    from confidently.io.artifacts import artifact_metadata, save_artifact
    from confidently.missingness import Inputs, LimeConfig
    from confidently.missingness.jobs import LimeJob, lime_batch_size

    guard_output(out, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    config = LimeConfig(samples, kernel_width, ridge_alpha, target, include_original)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    job = LimeJob(mmodel, backend, config, inputs, common.seed, str(model_path), fill)
    writer = Collector(job.keep)
    _, height, width = model.input_size
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=lime_batch_size(samples, height, width, common.batch_size), writer=writer,
                   description="explaining")
    if out is not None:
        save_artifact(out, job.artifact(writer.kept), artifact_metadata(
            tool="ablate", kind="explanations", config=common.config, seed=common.seed,
            ids=[i for i, _ in writer.kept], model=str(model_path), fill=fill, backend=backend, lime=config.as_dict(),
            **inputs.describe()))
        console.log(f"wrote {len(writer.kept)} explanations to {out}")


# ----------------------------------------------------------------------------- consistency


@app.command(epilog=examples("""
    # do LIME's top-k patches survive a change of baseline colour? 8 binary colours, 28 pairs
    head -4 digits.jsonl | ablate consistency --model cnn.safetensors --colors binary8 --patch-size 8 \\
      --samples 100 --k 2,4,8 --summary cons.json > cons.jsonl
    # the ViT dropping tokens under three paints: the Jaccard is 1 when no kept token shows paint
    head -4 digits.jsonl | ablate consistency --model vit.safetensors --fill drop --colors "black;mean;blur" \\
      --patch-size 8 --samples 100 --k 2,4,8 > cons-vit.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def consistency(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
                model_path: Path = typer.Option(..., "--model"),
                colors: str = typer.Option("binary8", "--colors",
                                           help="binary8, or fills separated by ';' (e.g. 'black;mean;blur')."),
                fill: str = typer.Option(None, "--fill", help="drop: ViT token dropping over each --colors paint "
                                         "(paint that reaches the model lowers the Jaccard)."),
                partial: str = PARTIAL_OPTION,
                ks_text: str = typer.Option(None, "--k", help="k values, e.g. 1,2,4,8 (default: 1..F)."),
                samples: int = LIME_OPTIONS["samples"], kernel_width: float = LIME_OPTIONS["kernel_width"],
                ridge_alpha: float = LIME_OPTIONS["ridge_alpha"], target: str = LIME_OPTIONS["target"],
                include_original: bool = LIME_OPTIONS["include_original"],
                unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
                superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
                summary: Path = typer.Option(None, "--summary"),
                force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
                *, common: Common) -> None:
    """Do LIME's rankings agree across baseline colours? Jaccard of top-k sets over every colour pair.

    Every colour sees the same perturbations (seeded by record id), so only the fill differs.
    With ``--fill drop`` each colour paints the removed pixels before the ViT drops their tokens:
    the Jaccard is 1 exactly when no kept token shows any paint.
    """
    from confidently.missingness import (
        Inputs,
        LimeConfig,
        MissingnessModel,
        color_fills,
        drop_over,
        make_fill,
        summarize_consistency,
    )
    from confidently.missingness.jobs import ConsistencyJob, lime_batch_size

    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    config = LimeConfig(samples, kernel_width, ridge_alpha, target, include_original)
    if fill not in (None, "drop"):
        raise UsageError("--fill is only for drop; give pixel colours with --colors")
    paints = [make_fill(f.name, model.mean) for f in color_fills(colors)]
    models = [MissingnessModel(model, drop_over(paint) if fill == "drop" else paint, common.batch_size, partial)
              for paint in paints]
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    job = ConsistencyJob(models, config, inputs, common.seed, parse_ks(ks_text), str(model_path))
    _, height, width = model.input_size
    writer = results_collector()
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=lime_batch_size(samples, height, width, common.batch_size), writer=writer,
                   description="consistency")
    if writer.kept:
        result = summarize_consistency(writer.kept)
        write_json(result, summary)
        show_series("LIME consistency (Jaccard of top-k)", result["ks"],
                    {"mean": result["jaccard_mean"], "random": result["random_reference"]})


def parse_ks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--k {text!r}: expected comma-separated integers") from None
    if not ks:
        raise UsageError(f"--k {text!r}: give at least one k")
    return ks


def show_series(title: str, ks: list[int], series: dict[str, list[float]]) -> None:
    table = Table("k", *series, title=title)
    shown = sorted({ks[0], *ks[:: max(1, len(ks) // 8)], ks[-1]})
    for j, k in enumerate(ks):
        if k in shown:
            table.add_row(str(k), *(f"{values[j]:.3f}" for values in series.values()))
    console.print(table)


# ----------------------------------------------------------------------------- topk


@app.command(epilog=examples("""
    # is the ResNet's LIME faithful? remove its top-k patches, against a random ranking (faster flips: more faithful)
    ablate topk digits.jsonl --model cnn.safetensors --fill mean --patch-size 8 \\
      --explanations lime-cnn.safetensors,random --kmax 16 --step 2 --summary topk.json > topk.jsonl
    # keep only the top k patches instead
    ablate topk digits.jsonl --model cnn.safetensors --fill mean --patch-size 8 \\
      --explanations lime-cnn.safetensors --kmax 16 --step 4 --keep-top > keep-top.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def topk(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
         model_path: Path = typer.Option(..., "--model", help="The model whose behaviour is explained."),
         fill: str = typer.Option("black", "--fill", help=FILL_HELP),
         partial: str = PARTIAL_OPTION,
         explanations: str = typer.Option(..., "--explanations",
                                          help="Comma-separated explanation files (`ablate lime --out`) or random."),
         kmax: int = typer.Option(50, "--kmax", min=1),
         step: int = typer.Option(2, "--step", min=1),
         keep_top: bool = typer.Option(False, "--keep-top", help="Remove everything except the top k instead."),
         unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
         superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
         summary: Path = typer.Option(None, "--summary"),
         force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
         *, common: Common) -> None:
    """Is an explanation faithful? Remove its top-k features and watch the prediction (faster flips: more faithful)."""
    from confidently.missingness import Inputs, summarize_topk
    from confidently.missingness.jobs import TopkJob, ranking_sources

    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    job = TopkJob(mmodel, ranking_sources([p.strip() for p in explanations.split(",") if p.strip()]), inputs,
                  common.seed, kmax, step, keep_top, str(model_path), fill, strict_kmax="kmax" in common.explicit)
    writer = results_collector()
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="top-k test")
    if writer.kept:
        result = summarize_topk(writer.kept)
        write_json(result, summary)
        show_series(f"top-k test ({'keep' if keep_top else 'remove'} top k): fraction unchanged", result["ks"],
                    {name: s["frac_unchanged"] for name, s in result["sources"].items()})


# ----------------------------------------------------------------------------- apply


@app.command(epilog=examples("""
    # a random quarter of the 4×4 patches blacked out: records of masked.safetensors (masks: 255 = visible)
    ablate apply digits.jsonl --patch-size 4 --remove-frac 0.25 --fill black --out masked.safetensors > masked.jsonl
    # the first 8 patches of the stored orders as masks only, certified: certify honours the masks
    ablate apply digits.jsonl --order given --orders orders.safetensors --remove 8 --patch-size 4 --fill drop \\
      --out dropped.safetensors | certify run --model cnn.safetensors --ablation-size 8 --stride 4 > certs.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
def apply(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          remove: int = typer.Option(None, "--remove", min=0, help="Remove K features."),
          remove_frac: float = typer.Option(None, "--remove-frac", help="Remove this fraction of the features."),
          order_name: str = typer.Option("random", "--order", help="random, saliency, saliency-reverse or given."),
          orders_path: Path = typer.Option(None, "--orders", help="Orders file (with --order given)."),
          ref_model: Path = typer.Option(None, "--ref-model", help="Saliency reference for --order saliency*."),
          fill: str = typer.Option("black", "--fill", help=FILL_HELP + " drop writes masks only."),
          unit: str = UNIT_OPTION, patch_size: int = PATCH_OPTION, ragged: bool = RAGGED_OPTION,
          superpixels: int = SUPERPIXELS_OPTION, segments: Path = SEGMENTS_OPTION,
          out: Path = typer.Option(..., "--out", help="masked.safetensors: images (filled) and masks (255 = visible)."),
          force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
          *, common: Common) -> None:
    """Ablated images and masks as records other tools read (`certify run` honours the mask)."""
    from confidently.io.artifacts import artifact_metadata, save_artifact
    from confidently.missingness import Inputs, Orders, make_fill
    from confidently.missingness.jobs import ApplyJob
    from confidently.run.device import resolve_device

    guard_output(out, "ablate", force=force)
    if (remove is None) == (remove_frac is None):
        raise UsageError("give exactly one of --remove K or --remove-frac F")
    if remove_frac is not None and not 0.0 <= remove_frac <= 1.0:
        raise UsageError(f"--remove-frac {remove_frac}: expected a fraction in [0, 1]")
    device = resolve_device(common.device)
    orders = Orders(None if order_name == "given" and orders_path else order_name, orders_path, ref_model, device,
                    common.seed, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, orders.ref)
    job = ApplyJob(orders, make_fill(fill), inputs, common.seed, out, fill, remove, remove_frac)
    writer = Collector(job.keep, hold=True)
    stream_batches(read_records(source, "image records"), job, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="ablating")
    save_artifact(out, job.artifact(writer.kept), artifact_metadata(
        tool="ablate", kind="masked", config=common.config, seed=common.seed, fill=fill, order=orders.name,
        ids=[r["id"] for r in writer.held if "ablate" in r]))
    writer.release()


# ----------------------------------------------------------------------------- fit


@app.command(epilog=examples("""
    # ROAR-style retraining: the ResNet fine-tuned with half of its 4×4 patches blacked out (metrics on stdout)
    ablate fit --data demo:digits --split train --init cnn.safetensors --fill black --remove-frac 0.5 \\
      --patch-size 4 --epochs 1 --lr 3e-4 --out cnn-roar.safetensors > roar.jsonl
    # its curve along the same orders, to set against the one before retraining
    ablate curve digits.jsonl --model cnn-roar.safetensors --fill black --orders orders.safetensors \\
      --patch-size 4 --step 4 --summary cnn-roar.json > /dev/null
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers", "skip_invalid"}, micro_batches=True)
def fit(data: str = FIT_DATA_OPTIONS["data"], split: str = FIT_DATA_OPTIONS["split"],
        val: str = FIT_DATA_OPTIONS["val"], val_split: str = FIT_DATA_OPTIONS["val_split"],
        arch: str = typer.Option("tiny_resnet", "--arch", help="tiny_resnet, tiny_vit, small_cnn or a timm name."),
        img_size: int = typer.Option(None, "--img-size", help="Input size of a new model (default: the first "
                                     "image's; photos of other sizes are fitted by the recipe's crops)."),
        init: Path = typer.Option(None, "--init", help="Fine-tune this model instead of training from scratch."),
        fill: str = typer.Option("black", "--fill", help=FILL_HELP),
        partial: str = PARTIAL_OPTION,
        remove_frac: float = typer.Option(0.5, "--remove-frac", help="Fraction of patches removed per image."),
        patch_size: int = typer.Option(16, "--patch-size", min=1),
        recipe: str = typer.Option("cpu-tiny", "--recipe", help=f"A training recipe: {', '.join(list_recipes())} "
                                   "(cpu-tiny; the thesis's: thesis-resnet, thesis-deit); options given win over it."),
        epochs: int = typer.Option(None, "--epochs", min=1),
        lr: float = typer.Option(None, "--lr"),
        sync_bn: bool = SYNC_BN_OPTION,
        out: Path = typer.Option(..., "--out"),
        resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint beside --out."),
        force: bool = typer.Option(False, "--force"),
        *, common: Common) -> None:
    """ROAR-style retraining: remove a random fraction of patches from every training image."""
    from confidently.fit import Fit, ModelFile, NewModel, Stage
    from confidently.missingness import MissingnessTraining

    config = recipe_config(recipe, {"epochs": epochs, "lr": lr, "batch_size": common.batch_size, "sync_bn": sync_bn},
                           common.explicit, seed=common.seed)
    origin = ModelFile(init) if init is not None else NewModel(arch, img_size=img_size)
    fit = Fit.start(out, "ablate", data, split=split, model=origin, val=val, val_split=val_split, force=force,
                    resume=resume, **common.fit_options())
    if fit is None:
        return
    model = fit.model
    filler = missingness(model, fill, partial, common.batch_size).fill
    hook = MissingnessTraining(filler, model.input_size[-2], model.input_size[-1], patch_size, remove_frac, partial)
    writer = RecordWriter()

    def log(stage: Stage, metrics: dict[str, Any]) -> None:
        writer.write({"tool": "ablate", "version": __version__, "kind": "metric", "cmd": "fit", "seed": common.seed,
                      **metrics})

    fit.run([Stage("fit", config, perturb=hook, forward=hook.forward)], on_epoch=log, training={
        "recipe": recipe, "init": str(init) if init else None,
        "missingness": {"fill": fill, "remove_frac": remove_frac, "patch_size": patch_size, "partial": partial}})


# ----------------------------------------------------------------------------- summarize

SUMMARIES = {"ablate-curve/v1": "curve", "ablate-consistency/v1": "consistency", "ablate-topk/v1": "topk"}


@app.command(epilog=examples("""
    # shards merge by cat: two halves of a curve run, the summary recomputed from their per-image records
    ablate curve digits.jsonl --model cnn.safetensors --orders orders.safetensors --patch-size 4 --step 4 \\
      --shard 0/2 > part-0.jsonl
    ablate curve digits.jsonl --model cnn.safetensors --orders orders.safetensors --patch-size 4 --step 4 \\
      --shard 1/2 > part-1.jsonl
    cat part-0.jsonl part-1.jsonl | ablate summarize > cnn-merged.json
    # records of several commands at once: one summary line per kind
    cat cnn-curve.jsonl topk.jsonl cons.jsonl | ablate summarize
"""))
@common_options()
def summarize(source: str = typer.Argument(None, help="ablate records (JSONL file, or - / stdin)."),
              class_similarity: Path = typer.Option(None, "--class-similarity",
                                                    help="C×C class similarity ('sim') for curve summaries."),
              *, common: Common) -> None:
    """Recompute dataset summaries from records (e.g. the `cat` of shards); one JSON per kind on stdout."""
    from confidently.missingness import summarize_consistency, summarize_curves, summarize_topk

    groups: dict[str, list[dict[str, Any]]] = {}
    for record in RecordReader(input_source(source, "ablate records"), validate=False):
        if "error" in record.data:
            continue
        result = record.data.get("ablate")
        if not isinstance(result, dict) or result.get("schema") not in SUMMARIES:
            raise record.error("expected the output of `ablate curve`, `consistency` or `topk`", "ablate")
        groups.setdefault(result["schema"], []).append(result)
    if not groups:
        raise NoValidResult("no ablate records to summarize")
    for schema, results in groups.items():
        kind = SUMMARIES[schema]
        try:
            if kind == "curve":
                num_classes = results[0].get("num_classes")
                similarity = load_similarity(class_similarity, num_classes) if class_similarity else None
                summary = summarize_curves(results, num_classes, None, similarity)
            elif kind == "consistency":
                summary = summarize_consistency(results)
            else:
                summary = summarize_topk(results)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        sys.stdout.write(json.dumps({"tool": "ablate", **summary}) + "\n")


@app.command(epilog=examples("""
    # the ResNet with black patches, after ROAR retraining, and the ViT dropping tokens, side by side
    ablate plot cnn.json cnn-roar.json vit.json --labels "CNN black,CNN ROAR,ViT drop" --out bias.png
    # the top-k test's summary as an SVG
    ablate plot topk.json --title "top-k test: the ResNet's LIME against random" --out topk.svg
"""))
@common_options()
def plot(summaries: list[Path] = typer.Argument(..., help="Summary JSON files of one kind (curve, topk, consistency)."),
         labels: str = typer.Option(None, "--labels", help="Comma-separated legend names (default: file names)."),
         title: str = typer.Option(None, "--title"),
         out: Path = typer.Option(..., "--out", help="Image file: .png, .svg or .pdf."),
         force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
         *, common: Common) -> None:
    """Draw summaries side by side: e.g. a CNN with black fill against a ViT that drops tokens."""
    from confidently.missingness.plots import plot_summaries

    guard_output(out, "ablate", force=force)
    names = [part.strip() for part in labels.split(",")] if labels else [path.stem for path in summaries]
    if len(names) != len(summaries):
        raise UsageError(f"--labels names {len(names)} lines for {len(summaries)} summaries")
    loaded = []
    for path in summaries:
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{path}: not a readable summary JSON ({exc})") from None
    try:
        plot_summaries(loaded, names, out, title)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    console.log(f"wrote {out}")


def main() -> None:
    run_app(app, "ablate")


if __name__ == "__main__":
    main()
