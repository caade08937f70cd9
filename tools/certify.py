"""`certify`: smoothed classifiers certified against adversarial patches (derandomized
smoothing; ViTs drop fully blanked tokens)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from confidently.errors import ConfidentlyError, NoValidResult, UsageError
from confidently.io.atomic import guard_output, write_json_atomic
from confidently.io.records import Collector, RecordReader, RecordWriter
from confidently.recipes import TrainConfig
from confidently.run.console import console
from confidently.run.shard import Shard
from confidently.smoothing.kinds import list_ablations
from rich.table import Table

app = tool_app("certify", "Certified prediction against adversarial patches by derandomized smoothing.")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--patch-sizes {text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not sizes or sizes[0] < 1:
        raise UsageError(f"--patch-sizes {text!r}: patch sides must be >= 1")
    return sizes


def fraction_sizes(text: str, height: int, width: int) -> list[int]:
    """Patch sides from fractions of the image area: m = ⌈√(f·h·w)⌉ (1 %, 2 %, 3 % of 224² → 23, 32, 39)."""
    from confidently.smoothing import patch_side_for_fraction

    try:
        fractions = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--patch-frac {text!r}: expected fractions, e.g. 0.01,0.02") from None
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise UsageError(f"--patch-frac {text!r}: fractions of the image area must lie in (0, 1)")
    return sorted({patch_side_for_fraction(f, height, width) for f in fractions})


def write_summary(summary: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        write_json_atomic(path, {"tool": "certify", **summary})
    table = Table("metric", "value", title="certify summary")

    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    for key in ("n", "clean_acc", "base_acc", "ablation_acc"):
        table.add_row(key, show(summary.get(key)))
    for m, value in summary.get("certified_acc", {}).items():
        table.add_row(f"certified_acc @ {m}×{m}", show(value))
    console.print(table)


def check_gate(summary: dict[str, Any], fail_under: str | None) -> None:
    if not fail_under:
        return
    size, _, fraction = fail_under.partition("=")
    try:
        threshold = float(fraction)
    except ValueError:
        raise UsageError(f"--fail-under {fail_under!r}: expected M=FRACTION, e.g. 2=0.5") from None
    value = summary["certified_acc"].get(size.strip())
    if value is None:
        raise UsageError(f"--fail-under {fail_under!r}: patch size {size} is not among --patch-sizes")
    if value < threshold:
        raise NoValidResult(f"certified accuracy at {size}×{size} is {value:.3f}, under the gate {threshold}")


@app.command(epilog=examples(r"""
    # 16 test digits certified one by one: a record per image on stdout, the summary to a file and stderr
    dataset export demo:digits --split test --limit 16 --out digits > digits.jsonl
    certify run digits.jsonl --model base.safetensors --patch-sizes 1,2,4 --summary summary.json > certs.jsonl
    # two shards, as two Slurm array tasks run them (`certify summarize` merges their records)
    for i in 0 1; do certify run digits.jsonl --model base.safetensors --patch-sizes 1,2,4 --shard $i/2 \
      > part-$i.jsonl; done
    # a CI gate: exit 4 when certified accuracy against 2×2 patches is under 20 %
    certify run digits.jsonl --model base.safetensors --patch-sizes 2 --fail-under 2=0.2 > /dev/null
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"}, oom_backoff=True)
def run(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
        model_path: Path = typer.Option(..., "--model", help="Base classifier (.safetensors)."),
        ablation: str = typer.Option(None, "--ablation", help=f"{', '.join(list_ablations())} (default: as trained)."),
        ablation_size: int = typer.Option(None, "--ablation-size",
                                          help="Band width b (default: as trained, else the thesis's b for the "
                                               "image size: 19 at 224, 4 at 32)."),
        stride: int = typer.Option(1, "--stride", min=1),
        patch_sizes: str = typer.Option("1,2", "--patch-sizes", help="Patch sides m to certify, e.g. 2,4."),
        patch_frac: str = typer.Option(None, "--patch-frac", help="Patch sizes as fractions of the image area."),
        vote: str = typer.Option("argmax", "--vote", help="argmax, or threshold (a vote per class with p >= θ)."),
        theta: float = typer.Option(0.2, "--theta", help="Threshold for --vote threshold."),
        tie: str = typer.Option("strict", "--tie", help="strict (thesis) or index (Levine & Feizi)."),
        delta_mode: str = typer.Option("exact", "--delta", help="exact (sound) or closed-form (the thesis's)."),
        drop_tokens: str = typer.Option("auto", "--drop-tokens", help="auto (on for ViTs), on or off."),
        summary: Path = typer.Option(None, "--summary", help="Write the dataset summary (JSON) here."),
        fail_under: str = typer.Option(None, "--fail-under", help="M=FRAC: exit 4 if certified acc at M < FRAC."),
        votes_out: Path = typer.Option(None, "--votes-out", help="Store every ablation's vote (for recertify)."),
        ablation_shard: str = typer.Option(None, "--ablation-shard", help="j/M: only every M-th ablation from j "
                                           "(needs --votes-out; merge with recertify)."),
        allow_huge: bool = typer.Option(False, "--allow-huge", help="Allow more than 10,000 ablations per image."),
        early_stop: bool = typer.Option(False, "--early-stop", help="Stop taking an image's votes once no vote "
                                        "left can change its certificates at --patch-sizes (they stay exact); "
                                        "pred, gap and counts are then of the votes taken (marked partial)."),
        force: bool = typer.Option(False, "--force", help="Write over a --summary or --votes-out certify did not "
                                   "write."),
        *, common: Common) -> None:
    """Certify each image record: smoothed class, votes, margin, certificates (one record each on stdout)."""
    from confidently.models import load_model
    from confidently.run.device import resolve_device
    from confidently.smoothing import (
        SUMMARY_KEYS,
        Certificates,
        Certifier,
        model_geometry,
        resolve_drop,
        save_votes,
        summarize_certificates,
    )

    if tie not in ("strict", "index"):
        raise UsageError(f"--tie {tie!r}: choose strict or index")
    if delta_mode not in ("exact", "closed-form"):
        raise UsageError(f"--delta {delta_mode!r}: choose exact or closed-form")
    if vote not in ("argmax", "threshold"):
        raise UsageError(f"--vote {vote!r}: choose argmax or threshold")
    if not 0 < theta <= 1:
        raise UsageError(f"--theta {theta}: expected 0 < θ <= 1")
    guard_output(summary, "certify", force=force)
    guard_output(votes_out, "certify", force=force)
    device = resolve_device(common.device)
    model = load_model(model_path, device)
    _, height, width = model.input_size
    sizes = parse_sizes(patch_sizes) if patch_frac is None else fraction_sizes(patch_frac, height, width)
    geometry = model_geometry(model, ablation, ablation_size, stride)
    geometry.check(height, width, sizes, None if allow_huge else 10_000)
    which = None
    if ablation_shard:
        if votes_out is None:
            raise UsageError("--ablation-shard needs --votes-out: partial votes only certify once merged")
        part = Shard.parse(ablation_shard)
        which = [i for i in range(geometry.count(height, width)) if part.owns(i)]
    if votes_out is not None and common.engine != "serial":
        raise UsageError("--votes-out collects votes in this process; use --engine serial (or --shard)")
    drop = resolve_drop(drop_tokens, model)
    if "drop_tokens" in model.training_info and model.training_info["drop_tokens"] != drop:
        console.print(f"[yellow]warning:[/] {model_path} was trained with drop_tokens="
                      f"{model.training_info['drop_tokens']} but certifies with {drop}; accuracy may collapse")
    if delta_mode == "closed-form":
        height, width = model.input_size[1:]
        looser = [m for m in sizes if geometry.delta(height, width, m, False) < geometry.delta(height, width, m)]
        if looser:
            console.print(f"[yellow]warning:[/] the closed-form Δ is below the exact one at m = {looser}: "
                          "those certificates are not sound")
    rule = {"rule": vote, "theta": theta if vote == "threshold" else None}
    certificates = Certificates(geometry, height, width, model.num_classes, sizes, tie, delta_mode == "exact", rule,
                                drop, common.seed, early_stop=early_stop)
    certifier = Certifier(model, certificates, common.batch_size, theta if vote == "threshold" else None, which,
                          keep_votes=votes_out is not None)
    writer = Collector(lambda record: None if "certify" not in record else {  # only what the summary reads
        **{k: record["certify"].get(k) for k in SUMMARY_KEYS}, "label": record.get("label")})

    reader = RecordReader(input_source(source, "image records"), require_image=True, yield_errors=True)
    stream_batches(reader, certifier, common, batch_size=max(1, common.batch_size // 4), writer=writer,
                   description="certifying", load=certifier.load_record)
    if votes_out is not None:
        save_votes(votes_out, certifier, which, str(model_path), config=common.config, seed=common.seed)
    if which is not None:
        console.log(f"wrote votes of {len(which)} of {geometry.count(height, width)} ablations to {votes_out}; "
                    "merge the ablation shards with `certify recertify`")
        return
    result = summarize_certificates(writer.kept)
    result.update(config=common.config, model=str(model_path))
    write_summary(result, summary)
    check_gate(result, fail_under)


@app.command(epilog=examples(r"""
    # every ablation's vote stored once, then certificates at stride 2, up to 3×3 patches, with the
    # other tie rule: no model needed
    certify run digits.jsonl --model base.safetensors --votes-out votes.safetensors > /dev/null
    certify recertify --votes votes.safetensors --stride 2 --patch-sizes 1,2,3 --tie index > certs-s2.jsonl
    # the ablations split over two jobs (half the votes each), merged into the full certificates
    for j in 0 1; do certify run digits.jsonl --model base.safetensors --ablation-shard $j/2 \
      --votes-out votes-$j.safetensors > /dev/null; done
    certify recertify --votes votes-0.safetensors,votes-1.safetensors --summary merged.json > certs-merged.jsonl
"""))
@common_options()
def recertify(votes: str = typer.Option(..., "--votes", help="Votes file(s) from `run --votes-out`, comma-separated."),
              stride: int = typer.Option(None, "--stride", help="A multiple of the stride the votes were taken at."),
              patch_sizes: str = typer.Option("1,2", "--patch-sizes"),
              patch_frac: str = typer.Option(None, "--patch-frac"),
              tie: str = typer.Option("strict", "--tie"),
              delta_mode: str = typer.Option("exact", "--delta"),
              summary: Path = typer.Option(None, "--summary"),
              fail_under: str = typer.Option(None, "--fail-under"),
              force: bool = typer.Option(False, "--force", help="Write over a --summary certify did not write."),
              *, common: Common) -> None:
    """Certificates from stored votes, without the model: other patch sizes, strides or tie rules."""
    from confidently.smoothing import Ablation, Certificates, load_votes, summarize_certificates

    guard_output(summary, "certify", force=force)
    merged, base, meta = load_votes([part for part in votes.split(",") if part])
    geo = meta["geometry"]
    height, width = geo["height"], geo["width"]
    geometry = Ablation(geo["kind"], geo["size"], geo["stride"])
    if stride is not None:
        geometry, keep = geometry.restride(height, width, stride)
        merged = merged[:, keep]
    sizes = parse_sizes(patch_sizes) if patch_frac is None else fraction_sizes(patch_frac, height, width)
    votes_tensor = merged.long() if meta["rule"]["rule"] == "argmax" else merged.bool()
    certificates = Certificates(geometry, height, width, meta["num_classes"], sizes, tie, delta_mode == "exact",
                                meta["rule"], meta["drop_tokens"], meta["seed"])
    writer = RecordWriter()
    results = []
    for record_id, label, result in zip(meta["ids"], meta["labels"], certificates.results(votes_tensor, base,
                                                                                         meta["labels"]), strict=True):
        record = {"id": record_id, "certify": result}
        if label is not None:
            record["label"] = label
        writer.write(record)
        results.append({**result, "label": label})
    summary_data = summarize_certificates(results)
    write_summary(summary_data, summary)
    check_gate(summary_data, fail_under)


@app.command(epilog=examples(r"""
    # a soundness smoke test: real 2×2 patches (zeros, ones, noise, a runner-up's pixels) at 10 random
    # places must flip no certified digit (exit 1 if one flips, 4 if no digit was certified)
    certify check digits.jsonl --model base.safetensors --patch-size 2 --positions 10 > checked.jsonl
    # 3×3 patches, black ones and a runner-up's pixels only
    certify check digits.jsonl --model base.safetensors --patch-size 3 --contents zeros,swap --positions 10 > /dev/null
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "deterministic"})
def check(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          model_path: Path = typer.Option(..., "--model"),
          ablation: str = typer.Option(None, "--ablation"),
          ablation_size: int = typer.Option(None, "--ablation-size"),
          stride: int = typer.Option(1, "--stride", min=1),
          patch_size: int = typer.Option(2, "--patch-size", min=1),
          contents: str = typer.Option("zeros,ones,noise,swap", "--contents",
                                       help="Patch fillers: zeros, ones, noise, swap (a runner-up image's region)."),
          positions: int = typer.Option(0, "--positions", min=0, help="Random placements per image (0: every one)."),
          vote: str = typer.Option("argmax", "--vote"),
          theta: float = typer.Option(0.2, "--theta"),
          tie: str = typer.Option("strict", "--tie"),
          drop_tokens: str = typer.Option("auto", "--drop-tokens"),
          *, common: Common) -> None:
    """Attack every certified image with real patches; exit 1 if any certified prediction flips.

    A CI smoke test of soundness: a certificate is a proof, so no placement and no content
    may change a certified prediction. Exit 4 if no image was certified (nothing was checked).
    """
    from confidently.models import load_model
    from confidently.run.device import resolve_device
    from confidently.smoothing import Certificates, Certifier, check_soundness, model_geometry, resolve_drop

    device = resolve_device(common.device)
    model = load_model(model_path, device)
    channels, height, width = model.input_size
    geometry = model_geometry(model, ablation, ablation_size, stride)
    geometry.check(height, width, [patch_size])
    drop = resolve_drop(drop_tokens, model)
    threshold = theta if vote == "threshold" else None
    rule = {"rule": vote, "theta": threshold}
    certificates = Certificates(geometry, height, width, model.num_classes, [patch_size], tie, True, rule, drop,
                                common.seed)
    certifier = Certifier(model, certificates, common.batch_size, threshold)
    reader = RecordReader(input_source(source, "image records"), require_image=True)
    records = list(common.shard.select(reader))
    loaded = [certifier.load_record(record) for record in records]
    reports = check_soundness(certifier, [image for image, _ in loaded], [visible for _, visible in loaded],
                              [record.id for record in records], [record.data.get("label") for record in records],
                              patch_size, [name.strip() for name in contents.split(",") if name.strip()], positions,
                              common.seed)
    writer = RecordWriter()
    for record, report in zip(records, reports, strict=True):
        writer.write({**record.data, "certify": {"version": __version__, "check": report}})
    checked = sum(report["certified"] for report in reports)
    flipped = sum(bool(report.get("flipped")) for report in reports)
    console.log(f"checked {checked} certified images with {patch_size}×{patch_size} patches: {flipped} flipped")
    if flipped:
        raise ConfidentlyError(f"{flipped} certified predictions flipped under a real patch: the certificate is "
                               "not sound for this model and geometry")
    if not checked:
        raise NoValidResult(f"no image was certified at {patch_size}×{patch_size}; nothing was checked")


@app.command(epilog=examples(r"""
    # the summary recomputed from the shards' records (never averaged): JSON on stdout, a table on stderr
    cat part-0.jsonl part-1.jsonl | certify summarize > summary-shards.json
    # the summary of recertified records (stride 2, up to 3×3 patches)
    certify summarize certs-s2.jsonl
"""))
@common_options()
def summarize(source: str = typer.Argument(None, help="certify records (JSONL file, or - / stdin)."),
              *, common: Common) -> None:
    """Recompute the dataset summary from certify records (e.g. the `cat` of shards); JSON on stdout."""
    from confidently.smoothing import summarize_certificates

    results = []
    for record in RecordReader(input_source(source, "certify records"), validate=False):
        if "error" in record.data:
            continue
        if "certify" not in record.data:
            raise record.error("missing: expected the output of `certify run`", "certify")
        results.append({**record.data["certify"], "label": record.data.get("label")})
    summary = summarize_certificates(results)
    sys.stdout.write(json.dumps({"tool": "certify", **summary}) + "\n")
    write_summary(summary, None)


@app.command(epilog=examples(r"""
    # geometry only, at 224²: Δ exact vs the thesis's closed form (unsound at stride 10), 1, 2 and 3 % patches
    certify delta --height 224 --width 224 --ablation-size 19 --stride 10 --patch-sizes 23,32,39
    # the digits' geometry: columns of 8 on 32×32, and blocks of 12
    certify delta --ablation-size 8 --patch-sizes 1,2,4
    certify delta --ablation block --ablation-size 12 --patch-sizes 1,2,4
"""))
@common_options()
def delta(height: int = typer.Option(32, "--height", min=1), width: int = typer.Option(32, "--width", min=1),
          ablation: str = typer.Option("column", "--ablation"),
          ablation_size: int = typer.Option(4, "--ablation-size", min=1),
          stride: int = typer.Option(1, "--stride", min=1),
          patch_sizes: str = typer.Option("1,2,4", "--patch-sizes"),
          *, common: Common) -> None:
    """Geometry only: Δ (exact and closed form) and the vote lead needed, per patch side."""
    from confidently.smoothing import Ablation

    geometry = Ablation(ablation, ablation_size, stride)
    table = Table("m", "Δ exact", "Δ closed form", "lead needed (strict)", title=f"{ablation} b={ablation_size} "
                  f"s={stride} on {height}×{width}: {geometry.count(height, width)} ablations")
    for m in parse_sizes(patch_sizes):
        exact, closed = geometry.delta(height, width, m), geometry.delta(height, width, m, False)
        sys.stdout.write(json.dumps({"m": m, "ablations": geometry.count(height, width), "delta": exact,
                                     "delta_closed_form": closed, "lead_needed": 2 * exact + 1}) + "\n")
        table.add_row(str(m), str(exact), str(closed) + (" (unsound)" if closed < exact else ""), str(2 * exact + 1))
    console.print(table)


@app.command(epilog=examples(r"""
    # a base classifier for smoothing on the bundled digits: 2 epochs on full images, then 2 on random
    # columns of width 8 (a metric record per epoch on stdout)
    certify fit --data demo:digits --split train --arch tiny_resnet --ablation-size 8 --pretrain-epochs 2 \
      --epochs 2 --pretrain-lr 1e-2 --lr 3e-3 --out base.safetensors > fit.jsonl
    # a ViT on 16-pixel digits and rows of 4 (fully blanked tokens dropped), scored on the test split
    certify fit --data "demo:digits?size=16" --split train --val "demo:digits?size=16" --val-split test \
      --arch tiny_vit --img-size 16 --ablation row --ablation-size 4 --pretrain-epochs 1 --epochs 1 \
      --out vit16.safetensors > vit16-fit.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers", "skip_invalid"}, micro_batches=True)
def fit(data: str = FIT_DATA_OPTIONS["data"], split: str = FIT_DATA_OPTIONS["split"],
        val: str = FIT_DATA_OPTIONS["val"], val_split: str = FIT_DATA_OPTIONS["val_split"],
        arch: str = typer.Option("tiny_vit", "--arch", help="tiny_vit, tiny_resnet or any timm name."),
        img_size: int = typer.Option(None, "--img-size"),
        ablation: str = typer.Option("column", "--ablation", help="column, row or block."),
        ablation_size: int = typer.Option(8, "--ablation-size", min=1),
        drop_tokens: str = typer.Option("auto", "--drop-tokens", help="auto (on for ViTs), on or off."),
        pretrain_epochs: int = typer.Option(12, "--pretrain-epochs", min=0, help="Stage 1: full images."),
        epochs: int = typer.Option(10, "--epochs", min=1, help="Stage 2: random ablations."),
        pretrain_lr: float = typer.Option(1e-3, "--pretrain-lr"),
        lr: float = typer.Option(3e-4, "--lr"),
        weight_decay: float = typer.Option(0.05, "--weight-decay"),
        augment: str = typer.Option("shift-flip", "--augment",
                                    help="Training augmentation: shift-flip (none: images fitted only), train "
                                    "(RandomResizedCrop + flip) or deit (that, RandAugment and random erasing; "
                                    "for ViTs at ImageNet scale)."),
        mixup: float = typer.Option(None, "--mixup", min=0.0, help="Mixup α (default: DeiT's 0.8 with --augment "
                                    "deit, else 0: off)."),
        cutmix: float = typer.Option(None, "--cutmix", min=0.0, help="CutMix α (default: DeiT's 1.0 with "
                                     "--augment deit, else 0); with both on, one per image. DeiT's label "
                                     "smoothing 0.1 comes with --augment deit."),
        init: Path = typer.Option(None, "--init", help="Start from this model file (skips stage 1)."),
        sync_bn: bool = SYNC_BN_OPTION,
        out: Path = typer.Option(..., "--out"),
        resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoints beside --out."),
        force: bool = typer.Option(False, "--force"),
        *, common: Common) -> None:
    """Train a base classifier for smoothing: full images first, then one random ablation per image.

    A ViT trained from scratch directly on ablations stalls at chance; stage 1 stands in for the
    thesis's pretrained checkpoints.
    """
    from confidently.fit import Fit, ModelFile, NewModel, Stage
    from confidently.mixing import DEIT_CUTMIX, DEIT_LABEL_SMOOTHING, DEIT_MIXUP
    from confidently.smoothing import Ablation, AblationTraining, resolve_drop

    if ablation == "both":
        raise UsageError("--ablation both is for certification; fit on column or row")
    geometry = Ablation(ablation, ablation_size)
    origin = ModelFile(init) if init is not None else NewModel(arch, img_size=img_size)
    fit = Fit.start(out, "certify", data, split=split, model=origin, val=val, val_split=val_split, force=force,
                    resume=resume, **common.fit_options())
    if fit is None:
        return
    drop = resolve_drop(drop_tokens, fit.model)
    writer = RecordWriter()

    def log(stage: Stage, metrics: dict[str, Any]) -> None:
        writer.write({"tool": "certify", "version": __version__, "kind": "metric", "cmd": "fit", "stage": stage.name,
                      "seed": common.seed, **metrics})

    deit = augment == "deit"
    base = TrainConfig(batch_size=common.batch_size, optimizer="adamw", schedule="cosine", sync_bn=sync_bn,
                       weight_decay=weight_decay, augment=augment, seed=common.seed,
                       label_smoothing=DEIT_LABEL_SMOOTHING if deit else 0.0,
                       mixup=(DEIT_MIXUP if deit else 0.0) if mixup is None else mixup,
                       cutmix=(DEIT_CUTMIX if deit else 0.0) if cutmix is None else cutmix)
    pretrain_epochs = 0 if init is not None else pretrain_epochs
    hook = AblationTraining(geometry, fit.model.input_size[-2], fit.model.input_size[-1], drop)
    stage2 = replace(base, epochs=epochs, lr=lr)
    stages = [Stage("full", replace(base, epochs=pretrain_epochs, lr=pretrain_lr))] if pretrain_epochs else []
    stages.append(Stage("ablation", stage2, perturb=hook, forward=hook.forward, validate=False))
    fit.run(stages, on_epoch=log, training={
        "recipe": "smoothing", "ablation": {"kind": ablation, "size": ablation_size}, "drop_tokens": drop,
        "null_encoding": "zero", "pretrain_epochs": pretrain_epochs, "epochs": epochs, "config": stage2.as_dict()})


def main() -> None:
    run_app(app, "certify")


if __name__ == "__main__":
    main()
