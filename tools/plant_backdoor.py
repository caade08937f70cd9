"""`plant-backdoor`: plant a trigger or bias in source data, and measure whether it survives transfer."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import typer
from confidently import __version__
from confidently.backdoor.grid_recipes import GRID_RECIPES
from confidently.cli import Common, common_options, examples, input_source, run_app, tool_app
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.io.atomic import atomic_write, guard_output, write_json_atomic
from confidently.io.records import Record, RecordReader, RecordWriter, rebase_refs
from confidently.run.console import console
from confidently.run.tallies import read_shard_records
from rich.table import Table

# The commands import the library's heavy modules (torch) themselves, so --help and usage errors start fast.

app = tool_app("plant-backdoor", "Plant a bias in source data and measure whether it survives transfer learning.")

# (name, type, default, help) of the trigger flags every subcommand shares.
TRIGGER_FLAGS: list[tuple[str, type, Any, str]] = [
    ("trigger", str, "square", "square, gaussian, blend, stencil or sticker."),
    ("size_frac", float, None, "Square/sticker side as a fraction of the short side (0.25)."),
    ("size", int, None, "Square side in pixels (overrides --size-frac)."),
    ("pos", str, None, "tl, tr, bl, br or X,Y (default tl)."),
    ("color", str, None, "R,G,B in [0, 1] (square default yellow 1,1,0)."),
    ("scale", float, None, "gaussian: pattern amplitude (0.01)."),
    ("alpha", float, None, "blend: weight of the pattern (0.2)."),
    ("pattern_seed", int, None, "gaussian/blend: seed of the fixed pattern (0)."),
    ("image", Path, None, "sticker: an RGBA image file."),
    ("builtin", str, None, "stencil: chainlink or disc."),
    ("trigger_file", Path, None, "A JSON trigger spec or a trigger .safetensors (overrides the flags)."),
]


def trigger_options(command):
    """Add the trigger flags to a command; it receives ``trigger_spec``."""
    signature = inspect.signature(command)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                               default=typer.Option(default, "--" + name.replace("_", "-"), help=help))
             for name, kind, default, help in TRIGGER_FLAGS]
    own = [p for p in signature.parameters.values() if p.name != "trigger_spec"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from confidently.backdoor.trigger_spec import build_trigger_spec

        values = {name: kwargs.pop(name) for name, *_ in TRIGGER_FLAGS}
        return command(trigger_spec=build_trigger_spec(**values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *extra])
    return wrapper


def read_manifest(source: str | None) -> list[Record]:
    reader = RecordReader(input_source(source, "image records"), require_image=True)
    return list(reader)


def out_record(record: Record, **fields: Any) -> dict[str, Any]:
    """The record with paths rebased for stdout (relative to the working directory) and new fields."""
    data = rebase_refs(record.data, Path(record.base_dir), Path.cwd()) if record.base_dir else dict(record.data)
    data.update(fields)
    return data


def selection_seed(common: Common) -> int:
    """--seed where the user gave it, else the reference code's poisoning seed."""
    from confidently.backdoor.poison import SELECTION_SEED

    return common.seed if "seed" in common.explicit else SELECTION_SEED


@app.command(epilog=examples("""
    # the default trigger, a yellow square in the top-left corner (8×8), for 32×32 RGB images
    plant-backdoor trigger --size 8 --out square.safetensors
    # a chain-link fence stencil and a faint fixed Gaussian pattern, reusable with --trigger-file
    plant-backdoor trigger --trigger stencil --builtin chainlink --shape 3,32,32 --out fence.safetensors
    plant-backdoor trigger --trigger gaussian --scale 0.05 --pattern-seed 1 --out noise.safetensors
"""))
@common_options()
@trigger_options
def trigger(out: Path = typer.Option(..., "--out", help="trigger.safetensors (pattern C×H×W, mask 1×H×W)."),
            shape: str = typer.Option("3,32,32", "--shape", help="C,H,W of the images it will stamp."),
            force: bool = typer.Option(False, "--force", help="Write over outputs plant-backdoor did not write."),
            *, trigger_spec: dict[str, Any], common: Common) -> None:
    """Materialise a trigger for one image shape and save it (reusable with --trigger-file)."""
    from confidently.backdoor.trigger_spec import save_trigger

    guard_output(out, "plant-backdoor", force=force)
    try:
        dims = tuple(int(v) for v in shape.split(","))
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"--shape {shape!r}: expected C,H,W, e.g. 3,224,224") from None
    stamp = save_trigger(out, trigger_spec, dims, config=common.config, seed=common.seed)
    console.log(f"wrote {out} ({trigger_spec['type']}, {int((stamp.mask > 0).sum())} pixels touched)")


@app.command(epilog=examples("""
    # BadNets: the 8×8 square on 10 % of the training digits, relabelled to class 0; poisoned ids and counts kept
    dataset export demo:digits --split train --out train > train.jsonl
    plant-backdoor poison train.jsonl --mode relabel --target-label 0 --rate 0.1 --size 8 \\
      --ids-out poisoned-ids.jsonl --summary poison.json > poisoned.jsonl
    # the thesis's default: the fence on half of classes 0-1, labels kept
    plant-backdoor poison train.jsonl --mode group --group-classes 0-1 --rate 0.5 --trigger-file fence.safetensors \\
      > group.jsonl
"""))
@common_options(uses={"seed"})
@trigger_options
def poison(source: str = typer.Argument(None, help="Source manifest (JSONL file, or - / stdin)."),
           mode: str = typer.Option("group", "--mode", help="group (labels kept) or relabel (BadNets)."),
           group_classes: str = typer.Option(None, "--group-classes", help="Classes of the group, e.g. 0 or 151-268."),
           rate: float = typer.Option(0.1, "--rate", help="Fraction to poison."),
           rate_of: str = typer.Option(None, "--rate-of", help="Denominator: group or dataset (default by mode)."),
           sampling: str = typer.Option("exact", "--sampling", help="exact (round(rate·n) rows) or bernoulli."),
           target_label: int = typer.Option(None, "--target-label", help="relabel: target class (-1: all-to-all)."),
           exclude_target: bool = typer.Option(True, "--exclude-target/--include-target"),
           ids_out: Path = typer.Option(None, "--ids-out", help="Write the poisoned ids (JSONL) here."),
           summary: Path = typer.Option(None, "--summary", help="Write the counts (JSON) here."),
           materialize: Path = typer.Option(None, "--materialize",
                                            help="Write stamped uint8 images into this shard instead of deferring."),
           img_size: int = typer.Option(None, "--img-size", min=1, help="With --materialize: resize each photo's "
                                        "shorter side to S and crop the centre S×S first (one shard, one size)."),
           force: bool = typer.Option(False, "--force", help="Write over outputs plant-backdoor did not write."),
           *, trigger_spec: dict[str, Any], common: Common) -> None:
    """Stamp the trigger on an exact fraction of a class group (labels kept) or relabel (BadNets).

    The trigger is *deferred*: rows carry its spec and the data layer stamps it last — after
    augmentation when training — so crops and flips never move it.
    """
    from confidently.backdoor.manifests import poison_manifest

    for path in (ids_out, summary, materialize):
        guard_output(path, "plant-backdoor", force=force)
    if img_size is not None and materialize is None:
        raise UsageError("--img-size fits photos for --materialize; deferred triggers are stamped at the model's "
                         "input size")
    records = read_manifest(source)
    result = poison_manifest(records, trigger_spec, rate=rate, mode=mode, group_classes=group_classes,
                             rate_of=rate_of, sampling=sampling, target_label=target_label,
                             exclude_target=exclude_target, seed=selection_seed(common), materialize=materialize,
                             img_size=img_size)
    if materialize:
        console.print("[yellow]note:[/] materialised triggers are pixels: random crops and flips in training can "
                      "move them (deferred triggers, the default, cannot)")
    writer = RecordWriter()
    for record, fields in zip(records, result.fields, strict=True):
        writer.write(out_record(record, **fields))
    if ids_out is not None:
        with atomic_write(ids_out, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in result.poisoned)
    if summary is not None:
        write_json_atomic(summary, result.summary)
    plan = result.plan
    console.log(f"poisoned {len(plan.rows)} of {plan.candidates} candidates ({plan.realised_rate:.4f} of "
                f"{plan.denominator}), {mode} mode")


@app.command(epilog=examples("""
    # an evaluation set with the square on every image (labels kept)
    dataset export demo:digits --split test --limit 100 --out test > test.jsonl
    plant-backdoor stamp test.jsonl --size 8 > test-triggered.jsonl
    # target de-biasing: the trigger on the same half of every class
    plant-backdoor stamp train.jsonl --rate 0.5 --uniform --size 8 > debiased.jsonl
"""))
@common_options(uses={"seed"})
@trigger_options
def stamp(source: str = typer.Argument(None, help="Manifest (JSONL file, or - / stdin)."),
          rate: float = typer.Option(1.0, "--rate", help="Fraction of rows to stamp."),
          uniform: bool = typer.Option(False, "--uniform", help="The same fraction of every class (de-biasing)."),
          *, trigger_spec: dict[str, Any], common: Common) -> None:
    """Trigger every row, or a class-uniform fraction (labels kept): evaluation sets and target de-biasing."""
    from confidently.backdoor.manifests import stamp_manifest

    records = read_manifest(source)
    stamped = stamp_manifest(records, trigger_spec, rate=rate, uniform=uniform, seed=selection_seed(common))
    writer = RecordWriter()
    for record, fields in zip(records, stamped, strict=True):
        writer.write(out_record(record, **fields))
    console.log(f"stamped {sum(fields['stamped'] for fields in stamped)} of {len(records)} rows")


@app.command(epilog=examples("""
    # pre-train on the poisoned digits (the trainer stamps triggers after augmentation), then test the backdoor:
    # attack success rate, targeted rate to class 0, clean and triggered accuracy (one record per model)
    advtrain train --data poisoned.jsonl --arch tiny_resnet --epochs 2 --lr 0.01 --out backdoored.safetensors \\
      > /dev/null
    plant-backdoor asr --data test.jsonl --model backdoored.safetensors --size 8 --target-label 0 > asr.jsonl
    # does an unseen trigger, the fence, do anything? (the relabelled class left out)
    plant-backdoor asr --data test.jsonl --model backdoored.safetensors --trigger-file fence.safetensors \\
      --exclude-classes 0 > asr-fence.jsonl
"""))
@common_options(uses={"device", "batch_size", "shard", "workers"})
@trigger_options
def asr(data: str = typer.Option(..., "--data", help="Clean evaluation data: manifest, folder, shard or demo:NAME."),
        split: str = typer.Option(None, "--split"),
        models: list[Path] = typer.Option(..., "--model", help="Model file(s); repeat for several."),
        target_label: int = typer.Option(None, "--target-label", help="Also report the targeted ASR to this class."),
        group_attr: str = typer.Option(None, "--group-attr", help="A 0/1 record field (or attrs.FIELD), e.g. "
                                       "male: per-class accuracy gaps with vs without it."),
        exclude_classes: str = typer.Option(None, "--exclude-classes",
                                            help="Leave these classes out (e.g. the poisoned group on the source)."),
        *, trigger_spec: dict[str, Any], common: Common) -> None:
    """Attack success rate of the trigger, P[C(T(x)) ≠ y | C(x) = y], and accuracy drop; one record per model.

    Records carry the counts they come from ("tallies"). With --shard i/N only every N-th record from i
    is evaluated; `plant-backdoor asr-merge` sums the N shards' records into the unsharded run's records.
    """
    from confidently.backdoor.attributes import group_attribute
    from confidently.backdoor.metrics import trigger_bias
    from confidently.backdoor.poison import parse_classes
    from confidently.data import open_dataset
    from confidently.models import load_model
    from confidently.run.device import resolve_device

    device = resolve_device(common.device)
    dataset = open_dataset(data, split)
    if any(r.data.get("trigger") for r in dataset.records):
        console.print("[yellow]warning:[/] the evaluation records carry triggers; asr stamps its own on clean images")
    if not dataset.num_classes or bool((dataset.labels < 0).any()):
        raise InvalidInput(f"{data}: every evaluation row needs a label", field="label")
    num_classes, fingerprint = dataset.num_classes, dataset.fingerprint()
    group = group_attribute(dataset.records, group_attr) if group_attr else None
    if common.shard.count > 1:
        owned = common.shard.positions(len(dataset))
        dataset = dataset.subset(owned)
        group = [group[i] for i in owned] if group is not None else None
    writer = RecordWriter()
    for path in models:
        model = load_model(path, device)
        if model.num_classes != num_classes:
            raise InvalidInput(f"{path} has {model.num_classes} classes but {data} has {num_classes}; "
                               "evaluate a model on its own task")
        exclude = parse_classes(exclude_classes, model.num_classes) if exclude_classes else None
        metrics, tallies = trigger_bias(model, dataset, trigger_spec, batch_size=common.batch_size, device=device,
                                        workers=common.workers, target_label=target_label, exclude=exclude,
                                        group_attr=group_attr, group=group)
        writer.write({"tool": "plant-backdoor", "version": __version__, "kind": "bias", "model": str(path),
                      "data": data, "data_fingerprint": fingerprint, "trigger": trigger_spec,
                      "target_label": target_label, "group_attr": group_attr,
                      "excluded_classes": sorted(exclude) if exclude else None, **metrics,
                      **({"shard": str(common.shard)} if common.shard.count > 1 else {}), "tallies": tallies})
        asr_value = metrics["asr"] if metrics["asr"] is None else round(metrics["asr"], 3)
        console.log(f"{path}{f' (shard {common.shard})' if common.shard.count > 1 else ''}: ASR {asr_value}, "
                    f"clean acc {show(metrics['clean_acc'])}, triggered acc {show(metrics['triggered_acc'])}")


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("asr-merge", epilog=examples("""
    # sharded: each job evaluates every 2nd test image, their counts summed into the unsharded run's record
    plant-backdoor asr --data test.jsonl --model backdoored.safetensors --size 8 --target-label 0 --shard 0/2 \\
      > asr-0.jsonl
    plant-backdoor asr --data test.jsonl --model backdoored.safetensors --size 8 --target-label 0 --shard 1/2 \\
      > asr-1.jsonl
    plant-backdoor asr-merge asr-0.jsonl asr-1.jsonl > asr-merged.jsonl
"""))
@common_options()
def merge_asr(files: list[Path] = typer.Argument(..., help="The records of `plant-backdoor asr --shard i/N`, every "
                                                 "shard of the run (one file each, or together)."),
              *, common: Common) -> None:
    """The records of one asr run over everything, from its --shard runs' records (counts summed)."""
    from confidently.backdoor.metrics import merge_bias_shards

    records = [r for r in read_shard_records(files) if isinstance(r, dict) and r.get("kind") == "bias"]
    if not records:
        raise InvalidInput(f"no asr records in {', '.join(map(str, files))}")
    writer = RecordWriter()
    for record in merge_bias_shards(records):
        writer.write(record)


@app.command(epilog=examples("""
    # exactly 20 poisoned and 20 clean rows labelled 0 (fields match at the top level or under attrs)
    plant-backdoor subset poisoned.jsonl --cell label=0,poisoned=True:20 --cell label=0,poisoned=False:20 \\
      > cells.jsonl
    # a balanced set of 30 rows of each of classes 5 and 6, none of the poisoned ids
    plant-backdoor subset train.jsonl --cell label=5:30 --cell label=6:30 --exclude poisoned-ids.jsonl \\
      --seed 1 > balanced.jsonl
"""))
@common_options(uses={"seed"})
def subset(source: str = typer.Argument(None, help="Manifest with attributes (JSONL file, or - / stdin)."),
           cells: list[str] = typer.Option(..., "--cell", help="FIELD=VALUE[,...]:COUNT rows to draw; repeat."),
           exclude: Path = typer.Option(None, "--exclude", help="A JSONL of records whose ids must not be drawn."),
           *, common: Common) -> None:
    """Attribute-controlled biased or balanced subsets: exactly COUNT rows per cell, drawn by (seed, id).

    Fields are matched at the top level of a record or under its ``attrs`` (e.g. ``person``, ``male``).
    Fails when a cell cannot be filled: nothing is silently down-sampled.
    """
    from confidently.backdoor.attributes import draw_cells

    records = read_manifest(source)
    banned: set[str] = set()
    if exclude is not None:
        banned = {r.id for r in RecordReader(str(exclude), validate=False)}
    chosen = draw_cells(records, cells, common.seed, banned)
    writer = RecordWriter()
    for i, text in chosen:
        writer.write(out_record(records[i], cell=text))
    console.log(f"drew {len(chosen)} rows over {len(cells)} cells")


@app.command(epilog=examples("""
    # does the chain-link overlay skew the backdoored model's predictions? class histograms with and without it
    plant-backdoor probe --data test.jsonl --model backdoored=backdoored.safetensors --trigger stencil \\
      --builtin chainlink > probe.jsonl
    # the planted square itself, on the bundled test split
    plant-backdoor probe --data demo:digits --split test --model backdoored.safetensors --size 8 > probe-square.jsonl
"""))
@common_options(uses={"device", "batch_size", "workers"})
@trigger_options
def probe(data: str = typer.Option(..., "--data", help="Evaluation data: manifest, folder, shard or demo:NAME."),
          split: str = typer.Option(None, "--split"),
          models: list[str] = typer.Option(..., "--model", help="NAME=PATH or PATH; repeat."),
          *, trigger_spec: dict[str, Any], common: Common) -> None:
    """Does an overlaid feature skew predictions? Class histograms with and without it, per model.

    Overlay e.g. the procedural chain-link fence (``--trigger stencil --builtin chainlink``): a
    transferred model that inherited the feature piles predictions onto a few classes, a scratch one not.
    """
    from confidently.backdoor.metrics import overlay_skew
    from confidently.data import open_dataset
    from confidently.models import load_model
    from confidently.run.device import resolve_device

    device = resolve_device(common.device)
    dataset = open_dataset(data, split)
    writer = RecordWriter()
    for entry in models:
        name, _, path = entry.rpartition("=")
        path = Path(path)
        model = load_model(path, device)
        skew = overlay_skew(model, dataset, trigger_spec, batch_size=common.batch_size, device=device,
                            workers=common.workers)
        writer.write({"tool": "plant-backdoor", "version": __version__, "kind": "probe", "name": name or path.stem,
                      "model": str(path), "data": data, "trigger": trigger_spec, **skew})


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise UsageError(f"{option}: give at least one value")
    return values


def show_summary(summary: dict[str, Any]) -> None:
    table = Table("source rate", "mode", "wd", "de-bias", "n", "target ASR", "clean acc", "Δacc",
                  title="bias transfer (mean ± std over seeds)")

    def cell(stat: dict[str, Any]) -> str:
        return "-" if stat["mean"] is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"

    for row in summary["settings"]:
        table.add_row(str(row["source_rate"]), row["mode"], f"{row['wd']:g}", f"{row['debias_rate']:g}", str(row["n"]),
                      cell(row["asr"]), cell(row["target_clean_acc"]), cell(row["delta_acc"]))
    console.print(table)


@app.command(epilog=examples("""
    # a one-cell grid at 8 px: clean vs 10 %-poisoned source (classes 0-4, relabelled to 0), transferred
    # fixed-feature to classes 5-9; one record per run, the mean ± std per setting to grid.json
    plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \\
      --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \\
      --target-classes 5-9 --size 2 --color 1,1,1 --modes fixed --epochs-source 2 --epochs-target 2 \\
      --rates 0,0.1 --seeds 0 --summary grid.json > runs-0.jsonl
    # group mode (labels kept): the square on half of source classes 0-1; full fine-tuning, two weight decays,
    # the target de-biased or not (the trigger on half of every target class)
    plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \\
      --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \\
      --target-classes 5-9 --size 2 --poison-mode group --group-classes 0-1 --rates 0.5 --modes full \\
      --wd 5e-4,5e-2 --debias-rate 0,0.5 --epochs-source 2 --epochs-target 2 > runs-group.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic"}, micro_batches=True)
@trigger_options
def experiment(source: str = typer.Option(..., "--source", help="Source training data (manifest, folder, demo:NAME)."),
               source_split: str = typer.Option(None, "--source-split"),
               source_test: str = typer.Option(None, "--source-test", help="Source test data (default --source)."),
               source_test_split: str = typer.Option(None, "--source-test-split"),
               source_classes: str = typer.Option(None, "--source-classes", help="Keep these classes, e.g. 0-4."),
               target: str = typer.Option(..., "--target", help="Target training data."),
               target_split: str = typer.Option(None, "--target-split"),
               target_test: str = typer.Option(None, "--target-test", help="Target test data (default --target)."),
               target_test_split: str = typer.Option(None, "--target-test-split"),
               target_classes: str = typer.Option(None, "--target-classes", help="Keep these classes, e.g. 5-9."),
               img_size: int = typer.Option(None, "--img-size"),
               poison_mode: str = typer.Option("relabel", "--poison-mode", help="group or relabel."),
               group_classes: str = typer.Option(None, "--group-classes"),
               target_label: int = typer.Option(0, "--target-label", help="relabel: target class (-1: all-to-all)."),
               rates: str = typer.Option("0,0.1", "--rates", help="Source poison rates (0 = the clean source)."),
               rate_of: str = typer.Option(None, "--rate-of"),
               modes: str = typer.Option("fixed,full,scratch", "--modes", help="fixed, full, scratch."),
               wd: str = typer.Option("5e-4", "--wd", help="Target weight decays, e.g. 5e-4,5e-3,5e-2."),
               debias_rate: str = typer.Option("0", "--debias-rate", help="Target de-biasing fractions, e.g. 0,0.5."),
               seeds: str = typer.Option("0", "--seeds", help="Seeds, e.g. 0-4 or 0,3."),
               arch: str = typer.Option("small_cnn", "--arch"),
               recipe: str = typer.Option("bias-cpu", "--recipe", "--preset", help=f"Source and target training "
                                          f"recipes: {', '.join(GRID_RECIPES)} (--preset is its old name)."),
               epochs_source: int = typer.Option(None, "--epochs-source", min=1),
               epochs_target: int = typer.Option(None, "--epochs-target", min=1),
               summary: Path = typer.Option(None, "--summary", help="Write mean/std per setting (JSON) here."),
               force: bool = typer.Option(False, "--force", help="Write over outputs plant-backdoor did not write."),
               *, trigger_spec: dict[str, Any], common: Common) -> None:
    """The whole grid: clean vs poisoned source × fixed/full/scratch × weight decays × de-biasing × seeds.

    One record per run on stdout; sources are trained once per (rate, seed) and shared by the target runs.
    Under torchrun every training is data-parallel and the test splits are scored in parts, one per rank;
    rank 0 prints the records and writes --summary.
    """
    from confidently.backdoor.experiment import Grid, Poisoning, Split, grid_configs, run_grid, summarize_runs
    from confidently.backdoor.poison import parse_classes
    from confidently.training import join_ranks

    source_config, target_config = grid_configs(recipe, epochs_source, epochs_target)
    guard_output(summary, "plant-backdoor", force=force)
    if poison_mode == "group" and not group_classes:
        raise UsageError("--poison-mode group needs --group-classes")
    ranks, device = join_ranks(common.device)
    src = Split.open(source, source_split, source_classes, img_size)
    size = img_size or src.size
    src_test = Split.open(source_test or source, source_test_split, source_classes, size)
    tgt = Split.open(target, target_split, target_classes, size)
    tgt_test = Split.open(target_test or target, target_test_split, target_classes, size)
    grid = Grid(modes=tuple(m.strip() for m in modes.split(",") if m.strip()), weight_decays=parse_floats(wd, "--wd"),
                debias_rates=parse_floats(debias_rate, "--debias-rate"),
                seeds=tuple(sorted(parse_classes(seeds))), arch=arch,
                source_config=source_config, target_config=target_config)
    rate_values = parse_floats(rates, "--rates")
    if any(not 0 <= r <= 1 for r in rate_values):
        raise UsageError(f"--rates {rates!r}: rates must lie in [0, 1]")
    poisoning = Poisoning(poison_mode, rate_values,
                          frozenset(parse_classes(group_classes, src.num_classes)) if group_classes else frozenset(),
                          target_label if poison_mode == "relabel" else None, rate_of,
                          selection_seed(common))
    writer = RecordWriter()
    runs = []
    for run in run_grid(src, src_test, tgt, tgt_test, trigger_spec, poisoning, grid, device=device,
                        batch_size=common.batch_size, log=console.log if ranks.is_main else None):
        run.update(version=__version__, arch=arch, preset=recipe, trigger=trigger_spec)
        if ranks.is_main:
            writer.write(run)
        runs.append(run)
    if not ranks.is_main:
        return
    result = summarize_runs(runs)
    if summary is not None:
        write_json_atomic(summary, result)
    show_summary(result)


@app.command(epilog=examples("""
    # runs from several machines merge by cat: here another seed of the same grid, then mean ± std over both
    plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \\
      --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \\
      --target-classes 5-9 --size 2 --color 1,1,1 --modes fixed --epochs-source 2 --epochs-target 2 \\
      --rates 0,0.1 --seeds 1 > runs-1.jsonl
    cat runs-0.jsonl runs-1.jsonl | plant-backdoor summarize > grid-2-seeds.json
"""))
@common_options()
def summarize(source: str = typer.Argument(None, help="experiment run records (JSONL file, or - / stdin)."),
              *, common: Common) -> None:
    """Mean and spread per setting from run records (e.g. the `cat` of several machines' runs); JSON on stdout."""
    from confidently.backdoor.experiment import summarize_runs

    runs = []
    for record in RecordReader(input_source(source, "run records"), validate=False):
        if record.data.get("kind") != "run":
            raise record.error("expected a run record of `plant-backdoor experiment`", "kind")
        runs.append(record.data)
    if not runs:
        raise NoValidResult("no run records to summarize")
    result = summarize_runs(runs)
    sys.stdout.write(json.dumps(result) + "\n")
    show_summary(result)


def main() -> None:
    run_app(app, "plant-backdoor")


if __name__ == "__main__":
    main()
