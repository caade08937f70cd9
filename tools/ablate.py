"""`ablate`: remove image features without missingness bias; missingness-bias curves, LIME,
LIME consistency across baseline colours, the top-k faithfulness test, and ROAR-style retraining."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import typer
from confidently import __version__
from confidently.cli import Common, common_options, input_source, run_app, stream_batches, tool_app
from confidently.data import open_source
from confidently.data.loader import StreamLoader
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.evaluation import clean_accuracy
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.atomic import guard_output, write_json_atomic
from confidently.io.records import Collector, Record, RecordReader, RecordWriter
from confidently.missingness import (
    Features,
    Inputs,
    LimeConfig,
    MissingnessModel,
    MissingnessTraining,
    Orders,
    RowsById,
    color_fills,
    curve_ks,
    drop_over,
    explain,
    fill_seeds,
    make_fill,
    missingness_curves,
    padded,
    pairwise_jaccard,
    removal_flags,
    removal_order,
    summarize_consistency,
    summarize_curves,
    summarize_topk,
    visible_after_removal,
)
from confidently.missingness.plots import plot_summaries
from confidently.models import create_model, load_model, save_model
from confidently.models.classifier import Classifier
from confidently.recipes import RECIPES, list_recipes, recipe_config
from confidently.run import console, derive_seed, record_generator, resolve_device
from confidently.training import train_classifier
from rich.table import Table

app = tool_app("ablate", "Feature removal without missingness bias: curves, LIME, consistency, top-k test.")


# ----------------------------------------------------------------------------- shared by the commands


def open_model(path: Path, common: Common) -> Classifier:
    return load_model(path, resolve_device(common.device))


def base_result(schema: str, common: Common, **fields: Any) -> dict[str, Any]:
    return {"schema": schema, "version": __version__, "seed": common.seed, **fields}


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
    return MissingnessModel(model, make_fill(fill, model.mean), batch_size,
                            partial)


# ----------------------------------------------------------------------------- order


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
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
    guard_output(out, "ablate", force=force)
    device = resolve_device(common.device)
    orders = Orders(order_name, None, ref_model, device, common.seed, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, orders.ref)
    kept: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict[str, Any]]:
        images = torch.stack([image for image, _ in loaded])
        features = [f for _, f in loaded]
        rows, scores = orders.compute(records, images, features)
        kept.extend(zip([r.id for r in records], rows, scores, strict=True))
        return [{**r.data, "ablate": base_result("ablate-order/v1", common, order=orders.name, features=f.count,
                                                 **inputs.describe(), first=row[:10].tolist())}
                for r, f, row in zip(records, features, rows, strict=True)]

    writer = RecordWriter()
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="ordering")
    tensors = {"orders": padded([row for _, row, _ in kept], -1, torch.int32),
               "counts": torch.tensor([len(row) for _, row, _ in kept], dtype=torch.int32)}
    if orders.ref is not None:
        tensors["scores"] = padded([s for _, _, s in kept], float("nan"), torch.float32)
    save_artifact(out, tensors, artifact_metadata(tool="ablate", kind="orders", config=common.config, seed=common.seed,
                                                  ids=[i for i, _, _ in kept], order=orders.name,
                                                  ref_model=str(ref_model) if orders.ref is not None else None,
                                                  **inputs.describe()))
    console.log(f"wrote {len(kept)} {orders.name} orders to {out}")


# ----------------------------------------------------------------------------- curve


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
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
    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    orders = Orders(order_name, orders_path, ref_model, mmodel.device, common.seed, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    similarity = load_similarity(class_similarity, model.num_classes)

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict[str, Any]]:
        images = torch.stack([image for image, _ in loaded])
        features = [f for _, f in loaded]
        rows, _ = orders.compute(records, images, features)
        out = []
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(tuple(curve_ks(f.count, step, kmax)), []).append(i)
        results: dict[int, dict[str, Any]] = {}
        for ks, members in groups.items():
            seeds = fill_seeds(common.seed, [records[i] for i in members], "fill", ks) if mmodel.fill.random \
                else None
            curves = missingness_curves(mmodel, images[members], [features[i] for i in members],
                                        [rows[i] for i in members], list(ks), seeds=seeds)
            first_flips = curves.first_flip()
            for row, i in enumerate(members):
                results[i] = base_result("ablate-curve/v1", common, model=str(model_path), fill=fill,
                                         true_removal=mmodel.fill.true_removal, partial=partial
                                         if mmodel.fill.drops_tokens else None, order=orders.name,
                                         **inputs.describe(), features=features[i].count, ks=list(ks),
                                         num_classes=model.num_classes, pred0=int(curves.pred0[row]),
                                         pred=curves.pred[row].tolist(),
                                         p_orig=[round(float(p), 6) for p in curves.p_orig[row]],
                                         first_flip_k=first_flips[row])
        for i, record in enumerate(records):
            out.append({**record.data, "ablate": results[i]})
        return out

    writer = results_collector()
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="curves")
    if not writer.kept:
        return
    result = summarize_curves(writer.kept, model.num_classes, None, similarity)  # as `summarize` computes it
    result["config"] = common.config
    write_json(result, summary)
    show_curve(result)


def load_similarity(path: Path | None, num_classes: int) -> torch.Tensor | None:
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


def lime_batch_size(samples: int, height: int, width: int, batch_size: int) -> int:
    """Images per LIME batch so that their T visibility masks stay under ~64 MB."""
    return max(1, min(batch_size, (1 << 26) // max(1, samples * height * width)))


def explain_batch(mmodel: MissingnessModel, backend: str, config: LimeConfig, common: Common, records: list[Record],
                  loaded: list[tuple[torch.Tensor, Features]]):
    images = torch.stack([image for image, _ in loaded])
    features = [f for _, f in loaded]
    generators = [record_generator(common.seed, r.id, "lime") for r in records]
    seeds = fill_seeds(common.seed, records, "lime-fill", range(config.samples)) if mmodel.fill.random else None
    return explain(backend, mmodel, images, features, config, generators, seeds), features


LIME_OPTIONS = {
    "samples": typer.Option(1000, "--samples", min=2, help="Perturbations per image T."),
    "kernel_width": typer.Option(0.25, "--kernel-width"),
    "ridge_alpha": typer.Option(1.0, "--ridge-alpha"),
    "target": typer.Option("prob", "--target", help="prob (the reference code) or logit (the thesis text)."),
    "include_original": typer.Option(True, "--include-original/--no-include-original",
                                     help="z_0 = all features kept (as the lime package)."),
    "backend": typer.Option("own", "--backend", help="own (batched) or lime (the reference package)."),
}


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
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
    guard_output(out, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    config = LimeConfig(samples, kernel_width, ridge_alpha, target, include_original)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    kept: list[tuple[str, Any]] = []

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict[str, Any]]:
        explanations, features = explain_batch(mmodel, backend, config, common, records, loaded)
        kept.extend(zip([r.id for r in records], explanations, strict=True))
        out_records = []
        for record, explanation, f in zip(records, explanations, features, strict=True):
            ranking = explanation.ranking
            out_records.append({**record.data, "ablate": base_result(
                "ablate-lime/v1", common, model=str(model_path), fill=fill, backend=backend, **config.as_dict(),
                **inputs.describe(), features=f.count, pred0=explanation.pred0, ranking_top=ranking[:20].tolist(),
                score_top=[round(float(explanation.scores[j]), 6) for j in ranking[:20]],
                intercept=round(explanation.intercept, 6), r2=round(explanation.r2, 6))})
        return out_records

    _, height, width = model.input_size
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=lime_batch_size(samples, height, width, common.batch_size),
                   description="explaining")
    if out is not None:
        save_artifact(out, {"scores": padded([e.scores for _, e in kept], float("nan"), torch.float32),
                            "ranking": padded([e.ranking for _, e in kept], -1, torch.int32),
                            "counts": torch.tensor([len(e.scores) for _, e in kept], dtype=torch.int32),
                            "intercept": torch.tensor([e.intercept for _, e in kept], dtype=torch.float32),
                            "pred0": torch.tensor([e.pred0 for _, e in kept], dtype=torch.int64)},
                      artifact_metadata(tool="ablate", kind="explanations", config=common.config, seed=common.seed,
                                        ids=[i for i, _ in kept], model=str(model_path), fill=fill,
                                        backend=backend, lime=config.as_dict(), **inputs.describe()))
        console.log(f"wrote {len(kept)} explanations to {out}")


# ----------------------------------------------------------------------------- consistency


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
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
    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    config = LimeConfig(samples, kernel_width, ridge_alpha, target, include_original)
    if fill not in (None, "drop"):
        raise UsageError("--fill is only for drop; give pixel colours with --colors")
    paints = [make_fill(f.name, model.mean) for f in color_fills(colors)]
    models = [MissingnessModel(model, drop_over(paint) if fill == "drop" else paint, common.batch_size, partial)
              for paint in paints]
    fills = [m.fill.name for m in models]
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict[str, Any]]:
        per_fill = [explain_batch(m, "own", config, common, records, loaded)[0] for m in models]
        out = []
        for i, (record, (_, f)) in enumerate(zip(records, loaded, strict=True)):
            ks = parse_ks(ks_text, f.count)
            rankings = [explanations[i].ranking for explanations in per_fill]
            jaccard = pairwise_jaccard(rankings, ks).tolist()
            means = torch.tensor(jaccard).mean(0).tolist()
            out.append({**record.data, "ablate": base_result(
                "ablate-consistency/v1", common, model=str(model_path), fills=fills, **config.as_dict(),
                **inputs.describe(), features=f.count, ks=ks, pairs=len(jaccard), jaccard=jaccard,
                jaccard_mean=means)})
        return out

    _, height, width = model.input_size
    writer = results_collector()
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=lime_batch_size(samples, height, width, common.batch_size), writer=writer,
                   description="consistency")
    if writer.kept:
        result = summarize_consistency(writer.kept)
        write_json(result, summary)
        show_series("LIME consistency (Jaccard of top-k)", result["ks"],
                    {"mean": result["jaccard_mean"], "random": result["random_reference"]})


def parse_ks(text: str | None, count: int) -> list[int]:
    if not text:
        return list(range(1, count + 1))
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--k {text!r}: expected comma-separated integers") from None
    if not ks or ks[0] < 1 or ks[-1] > count:
        raise UsageError(f"--k {text!r}: values must lie in 1..{count} (the number of features)")
    return ks


def show_series(title: str, ks: list[int], series: dict[str, list[float]]) -> None:
    table = Table("k", *series, title=title)
    shown = sorted({ks[0], *ks[:: max(1, len(ks) // 8)], ks[-1]})
    for j, k in enumerate(ks):
        if k in shown:
            table.add_row(str(k), *(f"{values[j]:.3f}" for values in series.values()))
    console.print(table)


# ----------------------------------------------------------------------------- topk


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
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
    guard_output(summary, "ablate", force=force)
    model = open_model(model_path, common)
    mmodel = missingness(model, fill, partial, common.batch_size)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, model)
    sources: list[tuple[str, RowsById | None]] = []
    for part in (p.strip() for p in explanations.split(",")):
        if not part:
            continue
        if part == "random":
            sources.append(("random", None))
            continue
        path = Path(part)
        name = path.stem
        while name in {n for n, _ in sources}:
            name += "'"
        sources.append((name, RowsById(path, "ranking", "explanation", "explanations from `ablate lime --out`")))
    if not sources:
        raise UsageError("--explanations: give at least one file or random")

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict[str, Any]]:
        images = torch.stack([image for image, _ in loaded])
        features = [f for _, f in loaded]
        fewest = min(f.count for f in features)
        if kmax > fewest and "kmax" in common.explicit:
            raise UsageError(f"--kmax {kmax}: an image has only {fewest} features to remove")
        ks = curve_ks(fewest, step, min(kmax, fewest))
        seeds = fill_seeds(common.seed, records, "topk-fill", ks) if mmodel.fill.random else None
        per_source = []
        for name, rows in sources:
            rankings = [rows.get(r, f.count) if rows else
                        removal_order("random", f.count, None, record_generator(common.seed, r.id, "random-rank"))
                        for r, f in zip(records, features, strict=True)]
            curves = missingness_curves(mmodel, images, features, rankings, ks, keep_top, seeds)
            per_source.append((name, curves.pred0, curves.unchanged().int().tolist()))
        return [{**record.data, "ablate": base_result(
            "ablate-topk/v1", common, model=str(model_path), fill=fill, keep_top=keep_top, **inputs.describe(),
            features=features[i].count, ks=ks, pred0=int(per_source[0][1][i]),
            unchanged={name: unchanged[i] for name, _, unchanged in per_source})}
            for i, record in enumerate(records)]

    writer = results_collector()
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="top-k test")
    if writer.kept:
        result = summarize_topk(writer.kept)
        write_json(result, summary)
        show_series(f"top-k test ({'keep' if keep_top else 'remove'} top k): fraction unchanged", result["ks"],
                    {name: s["frac_unchanged"] for name, s in result["sources"].items()})


# ----------------------------------------------------------------------------- apply


class Buffer(RecordWriter):
    """Holds records until the tensors they point to are on disk."""

    def __init__(self):
        super().__init__()
        self.held: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.held.append(record)

    def release(self) -> None:
        for record in self.held:
            RecordWriter.write(self, record)


@app.command()
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
    guard_output(out, "ablate", force=force)
    if (remove is None) == (remove_frac is None):
        raise UsageError("give exactly one of --remove K or --remove-frac F")
    if remove_frac is not None and not 0.0 <= remove_frac <= 1.0:
        raise UsageError(f"--remove-frac {remove_frac}: expected a fraction in [0, 1]")
    device = resolve_device(common.device)
    orders = Orders(None if order_name == "given" and orders_path else order_name, orders_path, ref_model, device,
                    common.seed, common.batch_size)
    filler = make_fill(fill)
    inputs = Inputs.for_model(unit, patch_size, ragged, superpixels, segments, orders.ref)
    images_out: list[torch.Tensor] = []
    masks_out: list[torch.Tensor] = []
    shape: list[tuple[int, ...]] = []

    def misfit(record: Record, image: torch.Tensor, features: Features) -> InvalidInput | None:
        """Why this image cannot go into the output file, checked in input order (the first image sets the size)."""
        if shape and tuple(image.shape) != shape[0]:
            return record.error(f"image is {list(image.shape)} but earlier ones are {list(shape[0])}; one output "
                                "file holds one image size (resize upstream)", "image")
        shape[:1] = [tuple(image.shape)]
        k = remove if remove is not None else round(remove_frac * features.count)
        if k > features.count:
            return record.error(f"--remove {k} is more than the {features.count} features of this image", "image")
        return None

    def compute(records: list[Record], loaded: list[tuple[torch.Tensor, Features]]) -> list[dict | InvalidInput]:
        results: list[dict | InvalidInput] = [misfit(r, image, f) for r, (image, f) in zip(records, loaded,
                                                                                           strict=True)]
        good = [i for i, problem in enumerate(results) if problem is None]
        if not good:
            return results
        images = torch.stack([loaded[i][0] for i in good])
        features = [loaded[i][1] for i in good]
        rows, _ = orders.compute([records[i] for i in good], images, features)
        for row_index, (i, f, row) in enumerate(zip(good, features, rows, strict=True)):
            record = records[i]
            k = remove if remove is not None else round(remove_frac * f.count)
            visible = visible_after_removal(f.labels, removal_flags(row, [k], f.count))
            index = len(masks_out)
            masks_out.append(visible[0].to(torch.uint8) * 255)
            data = {**record.data, "mask": {"tensors": str(out), "key": "masks", "index": index}}
            if not filler.drops_tokens:
                seeds = [derive_seed(common.seed, record.id, "apply-fill")] if filler.random else None
                images_out.append(filler(images[row_index:row_index + 1], visible, seeds)[0])
                data["image"] = {"tensors": str(out), "key": "images", "index": index}
            data["ablate"] = base_result("ablate-apply/v1", common, fill=fill, true_removal=filler.true_removal,
                                         order=orders.name, **inputs.describe(), features=f.count, k=k,
                                         removed=sorted(row[:k].tolist()))
            results[i] = data
        return results

    writer = Buffer()
    stream_batches(read_records(source, "image records"), compute, common, load=inputs.load,
                   batch_size=common.batch_size, writer=writer, description="ablating")
    tensors = {"masks": torch.stack(masks_out) if masks_out else torch.zeros(0, 0, 0, dtype=torch.uint8)}
    if images_out:
        tensors["images"] = torch.stack(images_out).float()
    save_artifact(out, tensors, artifact_metadata(tool="ablate", kind="masked", config=common.config,
                                                  seed=common.seed, fill=fill, order=orders.name,
                                                  ids=[r["id"] for r in writer.held if "ablate" in r]))
    writer.release()


# ----------------------------------------------------------------------------- fit


@app.command()
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def fit(data: str = typer.Option(..., "--data", help="Training data: manifest, folder, shard or demo:NAME."),
        split: str = typer.Option(None, "--split"),
        val: str = typer.Option(None, "--val"),
        val_split: str = typer.Option(None, "--val-split"),
        arch: str = typer.Option("tiny_resnet", "--arch", help="tiny_resnet, tiny_vit, small_cnn or a timm name."),
        init: Path = typer.Option(None, "--init", help="Fine-tune this model instead of training from scratch."),
        fill: str = typer.Option("black", "--fill", help=FILL_HELP),
        partial: str = PARTIAL_OPTION,
        remove_frac: float = typer.Option(0.5, "--remove-frac", help="Fraction of patches removed per image."),
        patch_size: int = typer.Option(16, "--patch-size", min=1),
        recipe: str = typer.Option("cpu-tiny", "--recipe", help=f"A training recipe: {', '.join(list_recipes())} "
                                   "(cpu-tiny; the thesis's: thesis-resnet, thesis-deit); options given win over it."),
        epochs: int = typer.Option(None, "--epochs", min=1),
        lr: float = typer.Option(None, "--lr"),
        out: Path = typer.Option(..., "--out"),
        force: bool = typer.Option(False, "--force"),
        *, common: Common) -> None:
    """ROAR-style retraining: remove a random fraction of patches from every training image."""
    RECIPES.get(recipe)  # an unknown recipe fails before any work
    guard_output(out, "ablate", force=force)
    if out.exists() and not force:
        console.log(f"{out} exists: nothing to do (--force retrains)")
        return
    device = resolve_device(common.device)
    dataset = open_source(data, split)
    if init is not None:
        model = load_model(init, device)
    else:
        if not dataset.num_classes:
            raise InvalidInput(f"{data} has no labels; fit needs labelled images", field="label")
        model = create_model(arch, dataset.num_classes, in_chans=dataset.image_shape()[0],
                             img_size=dataset.image_size(), classes=dataset.classes)
    model.check_input(torch.zeros(1, *model.input_size))
    filler = missingness(model, fill, partial, common.batch_size).fill
    hook = MissingnessTraining(filler, model.input_size[-2], model.input_size[-1], patch_size, remove_frac, partial)
    config = recipe_config(recipe, {"epochs": epochs, "lr": lr, "batch_size": common.batch_size}, common.explicit,
                           seed=common.seed)
    val_batches = None
    if val:
        val_batches = StreamLoader(open_source(val, val_split, channels=model.input_size[0]),
                                   make_preprocess("eval", DataConfig.of(model)), batch_size=common.batch_size,
                                   device=device, workers=common.workers, require_labels=True,
                                   num_classes=model.num_classes)
    writer = RecordWriter()

    def evaluate(trained: Classifier, epoch: int) -> dict[str, Any]:
        return {"val_acc": clean_accuracy(trained, val_batches, model.num_classes)} if val_batches else {}

    def log(metrics: dict[str, Any]) -> None:
        writer.write({"tool": "ablate", "version": __version__, "kind": "metric", "cmd": "fit", "seed": common.seed,
                      **metrics})

    train_classifier(model, dataset, config, device=device, perturb=hook, forward=hook.forward,
                     evaluate=evaluate, on_epoch=log, workers=common.workers)
    save_model(model.cpu(), out, training={
        "tool": "ablate", "recipe": recipe, "config": config.as_dict(), "init": str(init) if init else None,
        "missingness": {"fill": fill, "remove_frac": remove_frac, "patch_size": patch_size, "partial": partial},
        "seed": common.seed, "data": dataset.fingerprint()})
    console.log(f"wrote {out}")


# ----------------------------------------------------------------------------- summarize

SUMMARIES = {"ablate-curve/v1": "curve", "ablate-consistency/v1": "consistency", "ablate-topk/v1": "topk"}


@app.command()
@common_options()
def summarize(source: str = typer.Argument(None, help="ablate records (JSONL file, or - / stdin)."),
              class_similarity: Path = typer.Option(None, "--class-similarity",
                                                    help="C×C class similarity ('sim') for curve summaries."),
              *, common: Common) -> None:
    """Recompute dataset summaries from records (e.g. the `cat` of shards); one JSON per kind on stdout."""
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


@app.command()
@common_options()
def plot(summaries: list[Path] = typer.Argument(..., help="Summary JSON files of one kind (curve, topk, consistency)."),
         labels: str = typer.Option(None, "--labels", help="Comma-separated legend names (default: file names)."),
         title: str = typer.Option(None, "--title"),
         out: Path = typer.Option(..., "--out", help="Image file: .png, .svg or .pdf."),
         force: bool = typer.Option(False, "--force", help="Write over outputs ablate did not write."),
         *, common: Common) -> None:
    """Draw summaries side by side: e.g. a CNN with black fill against a ViT that drops tokens."""
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
