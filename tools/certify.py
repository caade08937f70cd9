"""`certify`: smoothed classifiers certified against adversarial patches (derandomized
smoothing; ViTs drop fully blanked tokens)."""

from __future__ import annotations

import dataclasses
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
from confidently.errors import ConfidentlyError, InvalidInput, NoValidResult, UsageError
from confidently.evaluation import clean_accuracy
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.atomic import atomic_write, guard_output
from confidently.io.images import ImageLoader, as_float
from confidently.io.records import Record, RecordReader, RecordWriter
from confidently.mixing import DEIT_CUTMIX, DEIT_LABEL_SMOOTHING, DEIT_MIXUP
from confidently.models import create_model, load_model, save_model
from confidently.models.classifier import Classifier
from confidently.run import Shard, console, record_generator, resolve_device
from confidently.smoothing import (
    ABLATIONS,
    SUMMARY_KEYS,
    Ablation,
    AblationTraining,
    ablation_votes,
    certify_counts,
    default_ablation_size,
    patch_attack,
    patch_contents,
    patch_side_for_fraction,
    summarize_certificates,
    vote_counts,
)
from confidently.training import TrainConfig, train_classifier
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


def model_geometry(model: Classifier, kind: str | None, size: int | None, stride: int) -> Ablation:
    """The ablation set asked for, defaulting to what the model was trained with (else the thesis's b)."""
    trained = model.training_info.get("ablation") or {}
    kind = kind or trained.get("kind", "column")
    _, height, width = model.input_size
    return Ablation(kind, size or trained.get("size") or default_ablation_size(kind, height, width), stride)


def resolve_drop(mode: str, model: Classifier) -> bool:
    if mode not in ("auto", "on", "off"):
        raise UsageError(f"--drop-tokens {mode!r}: choose auto, on or off")
    if mode == "on" and not model.is_vit:
        raise UsageError(f"--drop-tokens on needs a ViT; {model.arch} is not one")
    return model.is_vit if mode == "auto" else mode == "on"


class Certificates:
    """Turns votes into certificate results: counts, smoothed class, gap, Δ and certificates per size."""

    def __init__(self, ablation: Ablation, height: int, width: int, num_classes: int, patch_sizes: list[int],
                 tie: str, exact: bool, rule: dict[str, Any], drop_tokens: bool, seed: int):
        self.ablation, self.height, self.width = ablation, height, width
        self.num_classes, self.patch_sizes, self.tie = num_classes, patch_sizes, tie
        self.rule, self.drop_tokens, self.seed = rule, drop_tokens, seed
        # Δ for every patch side, once: certificates at the requested sizes and the largest certified size.
        self.deltas = {m: ablation.delta(height, width, m, exact) for m in range(1, max(height, width) + 1)}

    def results(self, votes: torch.Tensor, base: torch.Tensor, labels: list[int | None]) -> list[dict[str, Any]]:
        counts = vote_counts(votes, self.num_classes)
        certified_at = {m: certify_counts(counts, delta, self.tie)[1] for m, delta in self.deltas.items()}
        pred = certify_counts(counts, 0, self.tie)[0]
        return [self._result(votes[row], counts[row], int(pred[row]), int(base[row]), labels[row],
                             {m: bool(c[row]) for m, c in certified_at.items()}) for row in range(len(counts))]

    def _result(self, votes: torch.Tensor, counts: torch.Tensor, pred: int, base: int, label: int | None,
                certified_at: dict[int, bool]) -> dict[str, Any]:
        ranked = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
        runner_up = ranked[1] if len(ranked) > 1 else None
        gap = int(counts[pred]) - (int(counts[runner_up]) if runner_up is not None else 0)
        certified = {str(m): certified_at[m] for m in self.patch_sizes}
        return {
            "version": __version__, "seed": self.seed, "pred": pred, "base_pred": base,
            "correct": None if label is None else pred == label,
            "ablation": {"type": self.ablation.kind, "size": self.ablation.size, "stride": self.ablation.stride,
                         "n": len(votes), "null": "zero", "drop_tokens": self.drop_tokens},
            "vote": {**self.rule, "total": int(counts.sum())},
            "counts_top": [[c, int(counts[c])] for c in ranked[:3]], "runner_up": runner_up, "gap": gap,
            "delta": {str(m): self.deltas[m] for m in self.patch_sizes}, "certified": certified,
            "certified_correct": {m: ok and label is not None and pred == label for m, ok in certified.items()},
            "max_certified_patch": max((m for m, ok in certified_at.items() if ok), default=0),  # Δ grows with m
            "ablation_acc": None if label is None else float(
                (votes[:, label] if votes.ndim == 2 else votes == label).float().mean()),
        }


class Certifier:
    """Certifies a batch of loaded records: votes over the ablations and hands back results.

    With ``which`` (an ``--ablation-shard``) it only collects votes: certificates need them all.
    Votes are kept (``collected``) only with ``keep_votes`` (``--votes-out``): memory stays bounded
    by the batch, not the dataset.
    """

    def __init__(self, model: Classifier, certificates: Certificates, batch_size: int, theta: float | None,
                 which: list[int] | None = None, keep_votes: bool = False):
        self.model, self.certificates, self.batch_size, self.theta, self.which = model, certificates, batch_size, \
            theta, which
        self.keep_votes = keep_votes or which is not None
        self.channels, self.height, self.width = model.input_size
        self.loader = ImageLoader(self.channels)
        self.mask_loader = ImageLoader(1)
        fit = DataConfig.of(model)  # photos of any size: the model's eval resize and centre crop
        self.fit_image = make_preprocess("eval", fit)
        self.fit_mask = make_preprocess("eval", dataclasses.replace(fit, interpolation="nearest"))
        self.collected: list[tuple[str, int | None, torch.Tensor, int]] = []  # (id, label, votes, base prediction)

    def load_record(self, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
        if "image" not in record.data:
            raise record.error("missing: expected an image path or tensor reference", "image")
        try:
            stored = self.loader.load_raw(record.data["image"], record.base_dir)
        except InvalidInput as exc:
            raise record.error(exc.message, "image") from None
        image = as_float(self.fit_image(stored))
        visible = torch.ones(self.height, self.width, dtype=torch.bool)
        if "mask" in record.data:
            try:
                mask = self.mask_loader.load_raw(record.data["mask"], record.base_dir)
            except InvalidInput as exc:
                raise record.error(exc.message, "mask") from None
            if tuple(mask.shape[-2:]) != tuple(stored.shape[-2:]):
                raise record.error(f"mask is {mask.shape[-2]}×{mask.shape[-1]}, image is "
                                   f"{stored.shape[-2]}×{stored.shape[-1]}", "mask")
            visible = as_float(self.fit_mask(mask))[0] > 0.5
        label = record.data.get("label")
        if label is not None and label >= self.model.num_classes:
            raise record.error(f"label {label} is outside the model's {self.model.num_classes} classes", "label")
        return image, visible

    def votes_and_base(self, images: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every ablation's vote and the unablated (base) prediction for a batch of images."""
        device = self.model.normalize.mean.device
        votes = ablation_votes(self.model, images.to(device), self.certificates.ablation,
                               drop_tokens=self.certificates.drop_tokens, batch_size=self.batch_size,
                               visible=visible.to(device), theta=self.theta, which=self.which)
        with torch.no_grad():
            base = self.model(images.to(device)).argmax(1).cpu()
        return votes.cpu(), base

    def __call__(self, records: list[Record], loaded: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, Any]]:
        """Results for a batch of records and their :meth:`load_record` (image, visible) pairs."""
        votes, base = self.votes_and_base(torch.stack([image for image, _ in loaded]),
                                          torch.stack([visible for _, visible in loaded]))
        if self.keep_votes:
            self.collected += [(record.id, record.data.get("label"), votes[row], int(base[row]))
                               for row, record in enumerate(records)]
        if self.which is not None:
            return [{**record.data, "certify": {"partial": True, "ablations": len(self.which)}} for record in records]
        labels = [record.data.get("label") for record in records]
        return [{**record.data, "certify": result}
                for record, result in zip(records, self.certificates.results(votes, base, labels), strict=True)]


def fraction_sizes(text: str, height: int, width: int) -> list[int]:
    """Patch sides from fractions of the image area: m = ⌈√(f·h·w)⌉ (1 %, 2 %, 3 % of 224² → 23, 32, 39)."""
    try:
        fractions = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--patch-frac {text!r}: expected fractions, e.g. 0.01,0.02") from None
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise UsageError(f"--patch-frac {text!r}: fractions of the image area must lie in (0, 1)")
    return sorted({patch_side_for_fraction(f, height, width) for f in fractions})


def save_votes(path: Path, certifier: Certifier, geometry: Ablation, height: int, width: int,
               which: list[int] | None, rule: dict[str, Any], drop: bool, model: str, common: Common) -> None:
    """Every ablation's vote, so other patch sizes, strides and tie rules need no model (``recertify``)."""
    total = geometry.count(height, width)
    computed = torch.zeros(total, dtype=torch.bool)
    computed[which if which is not None else slice(None)] = True
    rows = certifier.collected
    if rule["rule"] == "argmax":
        votes = torch.full((len(rows), total), -2, dtype=torch.int16)  # -2: another ablation shard's
        for row, (_, _, vote, _) in enumerate(rows):
            votes[row, computed] = vote.to(torch.int16)
    else:
        votes = torch.zeros((len(rows), total, certifier.model.num_classes), dtype=torch.uint8)
        for row, (_, _, vote, _) in enumerate(rows):
            votes[row, computed] = vote.to(torch.uint8)
    meta = artifact_metadata(tool="certify", kind="votes", config=common.config, seed=common.seed,
                             ids=[r[0] for r in rows], labels=[r[1] for r in rows],
                             geometry={"kind": geometry.kind, "size": geometry.size, "stride": geometry.stride,
                                       "height": height, "width": width},
                             rule=rule, drop_tokens=drop, num_classes=certifier.model.num_classes, model=model)
    save_artifact(path, {"votes": votes, "computed": computed,
                         "base_pred": torch.tensor([r[3] for r in rows], dtype=torch.long)}, meta)


def write_summary(summary: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        with atomic_write(path, "w") as handle:
            handle.write(json.dumps({"tool": "certify", **summary}, indent=2) + "\n")
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


@app.command()
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                      "deterministic", "workers"})
def run(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
        model_path: Path = typer.Option(..., "--model", help="Base classifier (.safetensors)."),
        ablation: str = typer.Option(None, "--ablation", help=f"{', '.join(ABLATIONS)} (default: as trained)."),
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
        force: bool = typer.Option(False, "--force", help="Write over a --summary or --votes-out certify did not "
                                   "write."),
        *, common: Common) -> None:
    """Certify each image record: smoothed class, votes, margin, certificates (one record each on stdout)."""
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
                                drop, common.seed)
    certifier = Certifier(model, certificates, common.batch_size, theta if vote == "threshold" else None, which,
                          keep_votes=votes_out is not None)
    results: list[dict[str, Any]] = []

    class Collect(RecordWriter):
        def write(self, record: dict[str, Any]) -> None:
            super().write(record)
            if "certify" in record:  # only what the summary reads: the records themselves stream out
                results.append({**{k: record["certify"].get(k) for k in SUMMARY_KEYS}, "label": record.get("label")})

    reader = RecordReader(input_source(source, "image records"), require_image=True, yield_errors=True)
    stream_batches(reader, certifier, common, batch_size=max(1, common.batch_size // 4), writer=Collect(),
                   description="certifying", load=certifier.load_record)
    if votes_out is not None:
        save_votes(votes_out, certifier, geometry, height, width, which, rule, drop, str(model_path), common)
    if which is not None:
        console.log(f"wrote votes of {len(which)} of {geometry.count(height, width)} ablations to {votes_out}; "
                    "merge the ablation shards with `certify recertify`")
        return
    result = summarize_certificates(results)
    result.update(config=common.config, model=str(model_path))
    write_summary(result, summary)
    check_gate(result, fail_under)


def load_votes(paths: list[str]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Merge votes files of one geometry (ablation shards add up); (votes, base predictions, metadata)."""
    merged = computed = base = meta = None
    for path in paths:
        tensors, this = load_artifact(path)
        if this.get("kind") != "votes" or "votes" not in tensors:
            raise InvalidInput(f"{path} is not a certify votes file (write one with `certify run --votes-out`)")
        if meta is None:
            merged, computed, base, meta = tensors["votes"].clone(), tensors["computed"].clone(), \
                tensors["base_pred"], this
            continue
        for key in ("geometry", "rule", "ids", "num_classes"):
            if this.get(key) != meta.get(key):
                raise InvalidInput(f"{path} differs from {paths[0]} in {key}; only ablation shards of one run merge")
        overlap = computed & tensors["computed"]
        if overlap.any():
            raise InvalidInput(f"{path} repeats ablations already in the other files")
        merged[:, tensors["computed"]] = tensors["votes"][:, tensors["computed"]]
        computed |= tensors["computed"]
    if not bool(computed.all()):
        missing = int((~computed).sum())
        raise InvalidInput(f"{missing} ablations have no votes in {', '.join(paths)}; pass every ablation shard")
    return merged, base, meta


@app.command()
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


@app.command()
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
    images = [image for image, _ in loaded]
    labels = [record.data.get("label") for record in records]
    votes, base = certifier.votes_and_base(torch.stack(images), torch.stack([visible for _, visible in loaded]))
    results = certificates.results(votes, base, labels)
    writer = RecordWriter()
    checked = flipped = 0
    names = [name.strip() for name in contents.split(",") if name.strip()]
    for index, (record, result) in enumerate(zip(records, results, strict=True)):
        report: dict[str, Any] = {"patch": patch_size, "certified": result["certified"][str(patch_size)],
                                  "pred": result["pred"]}
        if report["certified"]:
            donor = next((images[j] for j, label in enumerate(labels) if label == result["runner_up"]
                          and j != index), None)
            generator = record_generator(common.seed, record.id)
            fillers = patch_contents(names, patch_size, channels, generator, donor)
            places = None
            if positions:
                rows = torch.randint(0, height - patch_size + 1, (positions,), generator=generator).tolist()
                cols = torch.randint(0, width - patch_size + 1, (positions,), generator=generator).tolist()
                places = list(zip(rows, cols, strict=True))
            flips = patch_attack(model, images[index].to(device), votes[index], geometry, patch_size, fillers,
                                 places, drop_tokens=drop, theta=threshold, batch_size=common.batch_size,
                                 visible=loaded[index][1].to(device))
            report.update(placements=len(places) if places else (height - patch_size + 1) * (width - patch_size + 1),
                          contents=sorted(fillers), flips=flips[:10], flipped=bool(flips))
            checked += 1
            flipped += bool(flips)
        writer.write({**record.data, "certify": {"version": __version__, "check": report}})
    console.log(f"checked {checked} certified images with {patch_size}×{patch_size} patches: {flipped} flipped")
    if flipped:
        raise ConfidentlyError(f"{flipped} certified predictions flipped under a real patch: the certificate is "
                               "not sound for this model and geometry")
    if not checked:
        raise NoValidResult(f"no image was certified at {patch_size}×{patch_size}; nothing was checked")


@app.command()
@common_options()
def summarize(source: str = typer.Argument(None, help="certify records (JSONL file, or - / stdin)."),
              *, common: Common) -> None:
    """Recompute the dataset summary from certify records (e.g. the `cat` of shards); JSON on stdout."""
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


@app.command()
@common_options()
def delta(height: int = typer.Option(32, "--height", min=1), width: int = typer.Option(32, "--width", min=1),
          ablation: str = typer.Option("column", "--ablation"),
          ablation_size: int = typer.Option(4, "--ablation-size", min=1),
          stride: int = typer.Option(1, "--stride", min=1),
          patch_sizes: str = typer.Option("1,2,4", "--patch-sizes"),
          *, common: Common) -> None:
    """Geometry only: Δ (exact and closed form) and the vote lead needed, per patch side."""
    geometry = Ablation(ablation, ablation_size, stride)
    table = Table("m", "Δ exact", "Δ closed form", "lead needed (strict)", title=f"{ablation} b={ablation_size} "
                  f"s={stride} on {height}×{width}: {geometry.count(height, width)} ablations")
    for m in parse_sizes(patch_sizes):
        exact, closed = geometry.delta(height, width, m), geometry.delta(height, width, m, False)
        sys.stdout.write(json.dumps({"m": m, "ablations": geometry.count(height, width), "delta": exact,
                                     "delta_closed_form": closed, "lead_needed": 2 * exact + 1}) + "\n")
        table.add_row(str(m), str(exact), str(closed) + (" (unsound)" if closed < exact else ""), str(2 * exact + 1))
    console.print(table)


@app.command()
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def fit(data: str = typer.Option(..., "--data", help="Training data: manifest, folder, shard or demo:NAME."),
        split: str = typer.Option(None, "--split"),
        val: str = typer.Option(None, "--val"),
        val_split: str = typer.Option(None, "--val-split"),
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
        out: Path = typer.Option(..., "--out"),
        force: bool = typer.Option(False, "--force"),
        *, common: Common) -> None:
    """Train a base classifier for smoothing: full images first, then one random ablation per image.

    A ViT trained from scratch directly on ablations stalls at chance; stage 1 stands in for the
    thesis's pretrained checkpoints.
    """
    if ablation == "both":
        raise UsageError("--ablation both is for certification; fit on column or row")
    guard_output(out, "certify", force=force)
    if out.exists() and not force:
        console.log(f"{out} exists: nothing to do (--force retrains)")
        return
    device = resolve_device(common.device)
    dataset = open_source(data, split)
    if init is not None:
        model = load_model(init, device)
        pretrain_epochs = 0
    else:
        if not dataset.num_classes:
            raise InvalidInput(f"{data} has no labels; fit needs labelled images", field="label")
        model = create_model(arch, dataset.num_classes, in_chans=dataset.image_shape()[0],
                             img_size=img_size or dataset.image_size(), classes=dataset.classes)
    model.check_input(torch.zeros(1, *model.input_size))
    drop = resolve_drop(drop_tokens, model)
    geometry = Ablation(ablation, ablation_size)
    val_batches = None
    if val:
        val_batches = StreamLoader(open_source(val, val_split, channels=model.input_size[0]),
                                   make_preprocess("eval", DataConfig.of(model)), batch_size=common.batch_size,
                                   device=device, workers=common.workers, require_labels=True,
                                   num_classes=model.num_classes)

    writer = RecordWriter()

    def log(stage: str):
        def emit(metrics: dict[str, Any]) -> None:
            writer.write({"tool": "certify", "version": __version__, "kind": "metric", "cmd": "fit", "stage": stage,
                          "seed": common.seed, **metrics})
        return emit

    def evaluate(trained: Classifier, epoch: int) -> dict[str, Any]:
        return {"val_acc": clean_accuracy(trained, val_batches, model.num_classes)} if val_batches else {}

    deit = augment == "deit"
    base = TrainConfig(batch_size=common.batch_size, optimizer="adamw", schedule="cosine",
                       weight_decay=weight_decay, augment=augment, seed=common.seed,
                       label_smoothing=DEIT_LABEL_SMOOTHING if deit else 0.0,
                       mixup=(DEIT_MIXUP if deit else 0.0) if mixup is None else mixup,
                       cutmix=(DEIT_CUTMIX if deit else 0.0) if cutmix is None else cutmix)
    if pretrain_epochs:
        stage1 = TrainConfig(**{**base.as_dict(), "epochs": pretrain_epochs, "lr": pretrain_lr})
        train_classifier(model, dataset, stage1, device=device, evaluate=evaluate, on_epoch=log("full"),
                         workers=common.workers)
    hook = AblationTraining(geometry, model.input_size[-2], model.input_size[-1], drop)
    stage2 = TrainConfig(**{**base.as_dict(), "epochs": epochs, "lr": lr})
    train_classifier(model, dataset, stage2, device=device, perturb=hook, forward=hook.forward,
                     on_epoch=log("ablation"), workers=common.workers)
    save_model(model.cpu(), out, training={
        "tool": "certify", "recipe": "smoothing", "ablation": {"kind": ablation, "size": ablation_size},
        "drop_tokens": drop, "null_encoding": "zero", "pretrain_epochs": pretrain_epochs, "epochs": epochs,
        "config": stage2.as_dict(), "seed": common.seed, "data": dataset.fingerprint()})
    console.log(f"wrote {out}")


def main() -> None:
    run_app(app, "certify")


if __name__ == "__main__":
    main()
