"""`advtrain`: standard and PGD-adversarial training, robustness evaluation, adversarial
examples as a dataset, penultimate features, robust transfer learning, weight import."""

from __future__ import annotations

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
    run_app,
    skip_invalid,
    tool_app,
)
from confidently.errors import InvalidInput, UsageError
from confidently.io.atomic import guard_output
from confidently.io.records import RecordWriter
from confidently.recipes import TrainConfig, list_recipes, recipe_config
from confidently.run.console import console, progress
from confidently.run.tallies import merge_shards, read_shard_records
from rich.table import Table

if TYPE_CHECKING:  # the heavy modules load inside the commands that use them, so --help starts without torch
    import torch
    from confidently.adversarial import PGDConfig
    from confidently.attacks import AttackSuite
    from confidently.data import Source
    from confidently.data.loader import StreamLoader
    from confidently.models.classifier import Classifier
    from confidently.training import Distributed

app = tool_app("advtrain", "Robust training, robustness evaluation and robust transfer learning.")

RECIPE_OPTION = typer.Option(None, "--recipe", "--preset", help=f"A training recipe: {', '.join(list_recipes())} "
                             "(options given win over it; --preset is its old name).")
AUGMENT_HELP = ("Training augmentation: shift-flip (--shift pixels, --flip; the CIFAR recipe), train "
                "(RandomResizedCrop + flip), robustness-imagenet (that and the robustness library's colour jitter "
                "and PCA lighting).")


def parse_eps(text: str) -> float:
    from confidently.adversarial import evaluate_expression

    value = evaluate_expression(text)
    if value < 0:
        raise UsageError(f"eps must be >= 0, got {text}")
    return value


def parse_eps_list(text: str) -> list[float]:
    return [parse_eps(part) for part in text.split(",") if part.strip()]


def eval_batches(dataset: Source, model: Classifier, common: Common, device: torch.device,
                 preprocess: str = "eval", crop_pct: float | None = None, labelled: bool = True) -> StreamLoader:
    """This ``--shard``'s part of the dataset (under ``torchrun``, this rank's share of it) through the model's
    eval preprocessing, in order.

    ``labelled``: every record needs a label within the model's classes (a map-style dataset's are checked
    here from its records, a stream's as they come).
    """
    from confidently.data import ImageDataset, check_labels
    from confidently.data.loader import StreamLoader
    from confidently.data.preprocess import DataConfig, make_preprocess
    from confidently.training import Distributed

    ranks = Distributed.current()
    if isinstance(dataset, ImageDataset) and common.shard.count > 1:
        dataset = dataset.subset(common.shard.positions(len(dataset)))
        rank, world = ranks.part()
    else:
        rank, world = ranks.part(common.shard.index, common.shard.count)
    return StreamLoader(dataset, make_preprocess(preprocess, DataConfig.of(model, crop_pct=crop_pct)),
                        batch_size=common.batch_size, device=device, workers=common.workers, rank=rank, world=world,
                        on_invalid=skip_invalid if common.skip_invalid else None,
                        require_labels=labelled and not check_labels(dataset, model.num_classes),
                        num_classes=model.num_classes if labelled else None)


def val_metrics(model: Classifier, batches: StreamLoader, attack: PGDConfig | None, seed: int) -> dict[str, Any]:
    """Clean (and with ``attack``, adversarial) validation accuracies, as ``val_*`` metrics; under ``torchrun``
    of every rank's part of ``batches``, counted together."""
    from confidently.adversarial import PGDConfig
    from confidently.evaluation import robustness_tallies
    from confidently.training import Distributed

    attack = attack or PGDConfig(eps=0.0)  # clean accuracy only
    tallies = robustness_tallies(model, batches, [attack], num_classes=model.num_classes, seed=seed)[0]
    tallies = Distributed.current().sum_tallies(tallies)
    return {f"val_{key}": value for key, value in metrics_from_tallies(tallies).items()}


def train_config(common: Common, recipe: str | None, values: dict[str, Any]) -> TrainConfig:
    """The training config: the options' defaults, then the recipe, then the options given (one rule for every
    command that trains: :func:`~confidently.recipes.recipe_config`)."""
    return recipe_config(recipe, {**values, "batch_size": common.batch_size}, common.explicit, seed=common.seed)


def metrics_from_tallies(tallies: dict[str, dict[str, list[int]]]) -> dict[str, float | None]:
    """Accuracy and mean-per-class accuracy, clean and (where attacked) adversarial."""
    from confidently.training import accuracies

    metrics: dict[str, float | None] = {"n": sum(tallies["nat"]["class_n"])}
    for arm, counts in tallies.items():
        metrics[f"{arm}_acc"], metrics[f"mpc_{arm}"] = accuracies(counts)
    return metrics


def known_length(items) -> int | None:
    """``len(items)``, or None for a stream that does not know its length (progress then counts up)."""
    try:
        return len(items)
    except TypeError:
        return None


def emit(record: dict[str, Any], ranks: Distributed | None = None) -> None:
    if ranks is None or ranks.is_main:
        RecordWriter().write({"tool": "advtrain", "version": __version__, **record})


@app.command(epilog=examples("""
    # a standard tiny ResNet on the digits, one quick epoch, checked on the test split (a record per epoch)
    advtrain train --data demo:digits --split train --val demo:digits --val-split test \\
      --arch tiny_resnet --epochs 1 --lr 0.01 --out standard.safetensors > standard.metrics.jsonl
    # an adversarially trained one on 16-px digits: l2 PGD at eps 1 in every batch (3 steps of 2*eps/3)
    advtrain train --data "demo:digits?size=16" --split train --arch tiny_resnet --constraint l2 --eps 1 \\
      --epochs 1 --lr 0.01 --out robust.safetensors > robust.metrics.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers", "skip_invalid"}, micro_batches=True)
def train(data: str = FIT_DATA_OPTIONS["data"], split: str = FIT_DATA_OPTIONS["split"],
          val: str = FIT_DATA_OPTIONS["val"], val_split: str = FIT_DATA_OPTIONS["val_split"],
          arch: str = typer.Option("tiny_resnet", "--arch", help="tiny_resnet, tiny_vit or any timm name."),
          num_classes: int = typer.Option(None, "--num-classes", help="Default: from the data."),
          img_size: int = typer.Option(None, "--img-size", help="Resize images to this size (default: as stored)."),
          constraint: str = typer.Option("l2", "--constraint", help="Attack norm: l2 or linf."),
          eps: str = typer.Option("0", "--eps", help="Attack radius in [0,1] pixel units (0 = standard training)."),
          attack_steps: int = typer.Option(3, "--attack-steps", help="PGD steps per training batch."),
          attack_lr: str = typer.Option("2*eps/3", "--attack-lr", help="PGD step size (expression in eps)."),
          random_start: bool = typer.Option(False, "--random-start/--no-random-start"),
          use_best: bool = typer.Option(True, "--use-best/--no-use-best", help="Keep the highest-loss PGD iterate."),
          epochs: int = typer.Option(10, "--epochs", min=1),
          lr: float = typer.Option(3e-3, "--lr"),
          optimizer: str = typer.Option("adamw", "--optimizer", help="sgd or adamw."),
          schedule: str = typer.Option("onecycle", "--schedule", help="onecycle, cyclic, cosine, step or constant."),
          weight_decay: float = typer.Option(0.05, "--weight-decay"),
          momentum: float = typer.Option(0.9, "--momentum"),
          step_every: int = typer.Option(0, "--step-every", help="step schedule: divide the LR by 10 every N epochs."),
          peak_epoch: float = typer.Option(0.0, "--peak-epoch", help="cyclic schedule: epoch of the LR peak."),
          augment: str = typer.Option("shift-flip", "--augment", help=AUGMENT_HELP),
          shift: int = typer.Option(2, "--shift", help="Random translation augmentation, in pixels."),
          flip: bool = typer.Option(False, "--flip/--no-flip", help="Random horizontal flips."),
          amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA only; bf16 where the GPU has it, "
                                   "else fp16): the update and the PGD attack's passes (validation stays fp32)."),
          sync_bn: bool = SYNC_BN_OPTION,
          recipe: str = RECIPE_OPTION,
          eval_every: int = typer.Option(1, "--eval-every", min=1),
          out: Path = typer.Option(..., "--out", help="Model file to write (.safetensors)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint beside --out."),
          force: bool = typer.Option(False, "--force", help="Train again even if --out exists."),
          *, common: Common) -> None:
    """Train a classifier, standard (eps 0) or PGD-adversarial; per-epoch metrics on stdout."""
    from confidently.adversarial import AdversarialPerturb, PGDConfig
    from confidently.fit import Fit, NewModel, Stage

    config = train_config(common, recipe, {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
                                           "momentum": momentum, "epochs": epochs, "schedule": schedule,
                                           "step_every": step_every, "peak_epoch": peak_epoch, "augment": augment,
                                           "shift": shift, "flip": flip, "amp": amp, "sync_bn": sync_bn})
    attack = PGDConfig.training(constraint, parse_eps(eps), attack_steps, attack_lr, random_start=random_start,
                                use_best=use_best)
    fit = Fit.start(out, "advtrain", data, split=split, model=NewModel(arch, num_classes, img_size), val=val,
                    val_split=val_split, validate=lambda model, batches: val_metrics(
                        model, batches, attack if attack.eps > 0 else None, common.seed),
                    eval_every=eval_every, force=force, resume=resume, **common.fit_options())
    if fit is None:
        return

    def log_epoch(stage: Stage, metrics: dict[str, Any]) -> None:
        emit({"kind": "metric", "cmd": "train", "constraint": attack.constraint, "eps": attack.eps,
              "seed": common.seed, **metrics})

    perturb = AdversarialPerturb(attack, amp=config.amp) if attack.eps > 0 else None  # the attack's passes too
    fit.run([Stage("train", config, perturb=perturb)], on_epoch=log_epoch, training={
        "recipe": "adversarial" if attack.eps > 0 else "standard", "constraint": attack.constraint,
        "eps": attack.eps, "attack_steps": attack.steps, "attack_lr": str(attack.step_size),
        "random_start": attack.random_start, "use_best": attack.use_best})


EVAL_COMPUTED = ("n", "nat_acc", "mpc_nat", "adv_acc", "mpc_adv", "by_attack")
ATTACK_HELP = ("Attacks, comma-separated: pgd, apgd-ce, apgd-t, fab-t, square, autoattack (APGD-CE, APGD-T, "
               "FAB-T and Square in sequence, RobustBench's standard version). All but pgd come from torchattacks "
               "(pip install --no-deps torchattacks) and draw random numbers per batch: seeded, so a rerun gives "
               "the same numbers, but they can change with --batch-size (pgd's do not).")
AA_OPTIONS = {
    "aa_steps": typer.Option(100, "--aa-steps", min=1, help="Iterations of APGD-CE, APGD-T and FAB-T "
                             "(AutoAttack: 100)."),
    "aa_targets": typer.Option(9, "--aa-targets", min=1, help="Target classes of APGD-T and FAB-T (AutoAttack: "
                               "9; at most the model's classes - 1)."),
    "queries": typer.Option(5000, "--queries", min=1, help="Square's query budget (AutoAttack: 5000)."),
}
AMP_OPTION = typer.Option(False, "--amp", help="Mixed precision in the attacks' passes (CUDA only, as in train: "
                          "bf16 where the GPU has it, else fp16; on the CPU it changes nothing). Losses, pixel "
                          "gradients and the accuracies stay fp32; records name the dtype (\"amp\").")


def attack_precision(amp: bool, device: torch.device) -> torch.dtype | None:
    """The attacks' autocast dtype for ``--amp`` on ``device`` (None: fp32)."""
    from confidently.adversarial import mixed_precision

    return mixed_precision(device) if amp else None


def amp_field(autocast: torch.dtype | None) -> dict[str, str]:
    """``{"amp": "bfloat16"}`` where the attacks ran in mixed precision; nothing where they ran in fp32."""
    return {"amp": str(autocast).removeprefix("torch.")} if autocast is not None else {}


def eval_metrics(tallies: dict[str, dict[str, list[int]]]) -> dict[str, Any]:
    """An eval record's metrics; at eps 0 the adversarial ones are the clean ones. Where several attacks
    ran, adv_acc/mpc_adv are the worst case and ``by_attack`` holds each attack's (from its ``adv:NAME``
    tallies)."""
    from confidently.training import accuracies

    metrics: dict[str, Any] = metrics_from_tallies({arm: c for arm, c in tallies.items() if ":" not in arm})
    metrics.setdefault("adv_acc", metrics["nat_acc"])
    metrics.setdefault("mpc_adv", metrics["mpc_nat"])
    by_attack = {arm.split(":", 1)[1]: dict(zip(("adv_acc", "mpc_adv"), accuracies(counts), strict=True))
                 for arm, counts in tallies.items() if arm.startswith("adv:")}
    if by_attack:
        metrics["by_attack"] = by_attack
    return metrics


@app.command("eval", epilog=examples("""
    # clean and l2 PGD accuracy of the robust model at three radii, 5 PGD steps (one record per eps)
    advtrain eval --model robust.safetensors --data "demo:digits?size=16" --split test --eps 0,0.5,1 --steps 5 \\
      > robust.eval.jsonl
    # l-inf at 2/255 and 8/255 on 16 test digits exported as PNGs, worst case of 2 PGD runs per image
    dataset export demo:digits --split test --limit 16 --out digits > digits.jsonl
    advtrain eval --model standard.safetensors --data digits.jsonl --constraint linf --eps 0,2/255,8/255 \\
      --steps 5 --restarts 2 > standard.eval.jsonl
    # PGD and AutoAttack (small budgets here; the defaults are AutoAttack's): each one's accuracy in by_attack,
    # the worst case per image in adv_acc
    advtrain eval --model robust.safetensors --data digits.jsonl --eps 1 --steps 5 --attack pgd,autoattack \\
      --aa-steps 5 --aa-targets 2 --queries 50 > robust.aa.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "deterministic", "workers", "skip_invalid"},
                oom_backoff=True)
def evaluate_robustness(model_path: Path = typer.Option(..., "--model", help="Model file (.safetensors)."),
                        data: str = typer.Option(..., "--data"),
                        split: str = typer.Option(None, "--split"),
                        constraint: str = typer.Option("l2", "--constraint", help="l2 or linf."),
                        eps: str = typer.Option("0,0.25,0.5,1", "--eps", help="Comma-separated radii (8/255 works)."),
                        attack: str = typer.Option("pgd", "--attack", help=ATTACK_HELP),
                        steps: int = typer.Option(20, "--steps", help="PGD steps (the thesis reports 20 and 100)."),
                        step_size: str = typer.Option("2.5*eps/steps", "--step-size"),
                        restarts: int = typer.Option(0, "--restarts", min=0,
                                                     help="PGD runs per example in all: the first from δ₀ = 0 "
                                                     "(or --random-start), R − 1 more from random starts; the "
                                                     "worst case is kept (0 and 1: one run)."),
                        random_start: bool = typer.Option(False, "--random-start/--no-random-start",
                                                          help="Start the first run at random too; starts derive "
                                                          "from (seed, id)."),
                        aa_steps: int = AA_OPTIONS["aa_steps"],
                        aa_targets: int = AA_OPTIONS["aa_targets"],
                        queries: int = AA_OPTIONS["queries"],
                        preprocess: str = typer.Option("eval", "--preprocess",
                                                       help="eval: resize the shorter side, crop the centre "
                                                       "(timm's); squash: resize to the input size."),
                        crop_pct: float = typer.Option(None, "--crop-pct", min=0.01, max=1.0,
                                                       help="Centre-crop fraction (default: the model's data config; "
                                                       "timm archs' pretrained value, 1 for tiny ones)."),
                        amp: bool = AMP_OPTION,
                        *, common: Common) -> None:
    """Clean and robust accuracy for each eps: one JSON record per eps on stdout.

    --attack names the attacks (PGD by default); with several, a point counts as robust only if no
    attack broke it (adv_acc, the worst case) and "by_attack" gives each attack's robust accuracy.
    PGD's random starts derive from (seed, id), so its numbers do not depend on --batch-size; the
    torchattacks attacks (apgd-ce, apgd-t, fab-t, square, autoattack) seed each batch from (seed, its
    record ids): a rerun gives the same numbers, another --batch-size or --shard may not.

    Records carry the per-class counts they come from ("tallies"). With --shard i/N only every N-th
    record from i is evaluated and the records say which shard they count; `advtrain eval-merge`
    sums the N shards' records into the records one run over everything gives. The data streams:
    images are decoded by --workers processes, batch by batch, and read once for every eps.
    """
    from confidently.adversarial import PGDConfig, get_constraint
    from confidently.attacks import AttackSuite, parse_attacks
    from confidently.data import open_source
    from confidently.evaluation import robustness_tallies
    from confidently.models import load_model
    from confidently.training import join_ranks

    names = parse_attacks(attack)
    ranks, device = join_ranks(common.device)
    get_constraint(constraint)
    radii = parse_eps_list(eps)
    model = load_model(model_path, device)
    autocast = attack_precision(amp, device)
    suites = [AttackSuite(names, PGDConfig.evaluation(constraint, radius, steps, step_size, restarts=restarts,
                                                      random_start=random_start),
                          steps=aa_steps, targets=aa_targets, queries=queries, autocast=autocast) for radius in radii]
    for suite in suites[:1]:
        suite.build(model.num_classes)  # a missing backend or an attack the model cannot take: before any work
    source = open_source(data, split, channels=model.input_size[0])
    fingerprint = source.fingerprint()
    batches = eval_batches(source, model, common, device, preprocess, crop_pct)
    tallies = robustness_tallies(model, progress(batches, known_length(batches), "eval"), suites,
                                 num_classes=model.num_classes, seed=common.seed)
    tallies = [{arm: dict(zip(counts, ranks.sum_counts(list(counts.values())), strict=True))
                for arm, counts in tally.items()} for tally in tallies]  # every rank's share, summed
    if not ranks.is_main:
        return
    described = ", ".join(f"PGD-{steps}" if name == "pgd" else name for name in names)
    title = f"{model_path.name}: {constraint} {described}" + (f", shard {common.shard}" * (common.shard.count > 1))
    shown = list(names) if len(names) > 1 else []
    table = Table("eps", "clean acc", *(f"{name} acc" for name in shown), "robust acc" + " (worst)" * bool(shown),
                  title=title)
    for radius, suite, counts in zip(radii, suites, tallies, strict=True):
        metrics = eval_metrics(counts)
        extra = {**suite.settings(), **({} if suite.per_record else {"batch_size": common.batch_size}),
                 **amp_field(autocast)}
        emit({"kind": "eval", "cmd": "eval", "model": str(model_path), "data": data, "data_fingerprint": fingerprint,
              "constraint": constraint, "eps": radius, "attack": ",".join(names), "steps": steps,
              "step_size": suite.pgd.alpha, "restarts": restarts, "random_start": random_start, **extra,
              "seed": common.seed, **metrics, **({"shard": str(common.shard)} if common.shard.count > 1 else {}),
              "tallies": counts})
        each = [metrics["by_attack"][name]["adv_acc"] for name in shown]
        table.add_row(f"{radius:g}", *(("-" if v is None else f"{v:.3f}") for v in
                                       (metrics["nat_acc"], *each, metrics["adv_acc"])))
    console.print(table)


@app.command("eval-merge", epilog=examples("""
    # one eval in two shards (e.g. on two machines: --shard 0/2 and 1/2), merged into the records one run gives
    advtrain eval --model robust.safetensors --data digits.jsonl --eps 0,1 --steps 5 --shard 0/2 > eval-0.jsonl
    advtrain eval --model robust.safetensors --data digits.jsonl --eps 0,1 --steps 5 --shard 1/2 > eval-1.jsonl
    advtrain eval-merge eval-0.jsonl eval-1.jsonl > eval-merged.jsonl
"""))
@common_options()
def merge_evaluations(files: list[Path] = typer.Argument(..., help="The records of `advtrain eval --shard i/N`, "
                                                         "every shard of the run (one file each, or together)."),
                      *, common: Common) -> None:
    """The records of one eval over everything, from its --shard runs' records (counts summed)."""
    records = [r for r in read_shard_records(files) if r.get("kind") == "eval"]
    if not records:
        raise InvalidInput(f"no eval records in {', '.join(map(str, files))}")
    writer = RecordWriter()
    for record in merge_shards(records, EVAL_COMPUTED, eval_metrics):
        writer.write(record)


@app.command(epilog=examples("""
    # l-inf PGD versions of the 16 test digits: images in adv.safetensors, a manifest record each on stdout
    advtrain attack --model robust.safetensors --data digits.jsonl --constraint linf --eps 8/255 --steps 10 \\
      --shard-out adv.safetensors > adv.jsonl
    # the attacked images are a dataset like any other: the model's accuracy on them
    advtrain eval --model robust.safetensors --data adv.jsonl --eps 0 > adv.eval.jsonl
    # targeted: push every digit towards class 0 (l2, eps 2)
    advtrain attack --model robust.safetensors --data digits.jsonl --constraint l2 --eps 2 --target-label 0 \\
      --shard-out to-zero.safetensors > to-zero.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "deterministic", "workers", "skip_invalid"},
                oom_backoff=True)
def attack(model_path: Path = typer.Option(..., "--model", help="Model file (.safetensors)."),
           data: str = typer.Option(..., "--data"),
           split: str = typer.Option(None, "--split"),
           constraint: str = typer.Option("linf", "--constraint"),
           eps: str = typer.Option("8/255", "--eps"),
           attack: str = typer.Option("pgd", "--attack", help="One attack: pgd, apgd-ce, apgd-t, fab-t, square "
                                     "or autoattack (see `advtrain eval --help`; all but pgd need torchattacks and "
                                     "can depend on --batch-size)."),
           steps: int = typer.Option(20, "--steps", help="PGD steps."),
           step_size: str = typer.Option("2.5*eps/steps", "--step-size"),
           random_start: bool = typer.Option(False, "--random-start/--no-random-start"),
           aa_steps: int = AA_OPTIONS["aa_steps"],
           aa_targets: int = AA_OPTIONS["aa_targets"],
           queries: int = AA_OPTIONS["queries"],
           targeted: int = typer.Option(None, "--target-label", help="Targeted attack towards this class (pgd)."),
           amp: bool = AMP_OPTION,
           shard_out: Path = typer.Option(..., "--shard-out", help="Safetensors shard for the adversarial images."),
           force: bool = typer.Option(False, "--force", help="Write over a --shard-out advtrain did not write."),
           *, common: Common) -> None:
    """Adversarial images as a dataset: a shard of images plus one manifest record per input on stdout.

    Records keep their fields; "image" points into the shard and "advtrain" says what was done.
    PGD's random starts derive from (seed, id), so its results do not depend on batching or sharding;
    the torchattacks attacks seed each batch from (seed, its record ids), so theirs can.
    """
    import torch
    from confidently.adversarial import PGDConfig, get_constraint
    from confidently.attacks import AttackSuite, parse_attacks
    from confidently.data import open_source
    from confidently.io.artifacts import artifact_metadata
    from confidently.io.shard_writer import ShardWriter
    from confidently.models import load_model
    from confidently.run.device import resolve_device

    names = parse_attacks(attack)
    if len(names) != 1:
        raise UsageError(f"--attack {attack!r}: attack writes the examples of one attack (eval takes several)")
    guard_output(shard_out, "advtrain", force=force)
    device = resolve_device(common.device)
    config = PGDConfig.evaluation(constraint, parse_eps(eps), steps, step_size, random_start=random_start)
    suite = AttackSuite(names, config, steps=aa_steps, targets=aa_targets, queries=queries,
                        autocast=attack_precision(amp, device))
    model = load_model(model_path, device)
    if targeted is not None and not 0 <= targeted < model.num_classes:
        raise InvalidInput(f"--target-label {targeted} is outside the model's {model.num_classes} classes")
    attacker, = suite.build(model.num_classes)
    if targeted is not None and not attacker.targetable:
        raise UsageError(f"--target-label: attack {names[0]!r} is untargeted here (targeted attacks: pgd)")
    dataset = open_source(data, split, channels=model.input_size[0])
    constraint_fn = get_constraint(constraint)
    batches = eval_batches(dataset, model, common, device, labelled=targeted is None)
    shard = ShardWriter(shard_out)
    records = []
    try:
        for batch in progress(batches, known_length(batches), "attack"):
            goal = torch.full_like(batch.labels, targeted) if targeted is not None else batch.labels
            adversarial = attacker(model, batch.images, goal, batch.ids, common.seed, targeted=targeted is not None)
            with torch.no_grad():
                clean_pred, adv_pred = model(batch.images).argmax(1), model(adversarial).argmax(1)
            norms = constraint_fn.norm(adversarial - batch.images)
            for row, fields in enumerate(batch.records):
                records.append(attack_record(fields, len(records), shard_out, suite, int(clean_pred[row]),
                                             int(adv_pred[row]), float(norms[row]), targeted))
            shard.append(images=adversarial.cpu(), labels=batch.labels.cpu())
    except BaseException:
        shard.discard()
        raise
    meta = artifact_metadata(tool="advtrain", kind="adversarial-images", config=common.config, seed=common.seed,
                             ids=[record["id"] for record in records], classes=dataset.classes)
    shard.close(meta, empty={"images": (torch.float32, tuple(model.input_size)), "labels": (torch.int64, ())})
    writer = RecordWriter()
    for record in records:
        writer.write(record)


def attack_record(fields: dict[str, Any], row: int, shard_out: Path, suite: AttackSuite, pred_clean: int,
                  pred_adv: int, norm: float, targeted: int | None) -> dict[str, Any]:
    """The input's record pointing at its adversarial image in the shard, with what was done to it."""
    record = dict(fields)
    original = record.get("image")
    record["image"] = {"tensors": str(shard_out), "key": "images", "index": row}
    settings = {"steps": suite.pgd.steps} if suite.names == ("pgd",) else suite.settings()
    record["advtrain"] = {"adv_of": record["id"], "attack": suite.names[0], "constraint": suite.constraint,
                          "eps": suite.eps, **settings, **amp_field(suite.autocast), "pred_clean": pred_clean,
                          "pred_adv": pred_adv, "norm": norm}
    if original is not None:
        record["advtrain"]["source_image"] = original
    if targeted is not None:
        record["advtrain"]["target"] = targeted
    return record


@app.command(epilog=examples("""
    # the robust digits model to a 5-class shapes task: a new head on its frozen features (summary: last line)
    advtrain transfer --source robust.safetensors --data "demo:shapes?classes=5&per_class=40" --split train \\
      --val "demo:shapes?classes=5&per_class=40" --val-split test --mode fixed --epochs 1 \\
      --out shapes-fixed.safetensors | tail -1
    # full-network fine-tuning of the layers after layer1, from a manifest
    dataset export "demo:shapes?classes=5&per_class=40" --split train --out shapes > shapes.jsonl
    advtrain transfer --source robust.safetensors --data shapes.jsonl --mode full --freeze-to layer1 \\
      --epochs 1 --out shapes-full.safetensors > shapes-full.metrics.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers", "skip_invalid"}, micro_batches=True)
def transfer(source: Path = typer.Option(..., "--source", help="Source model file (.safetensors)."),
             data: str = FIT_DATA_OPTIONS["data"], split: str = FIT_DATA_OPTIONS["split"],
             val: str = FIT_DATA_OPTIONS["val"], val_split: str = FIT_DATA_OPTIONS["val_split"],
             mode: str = typer.Option("fixed", "--mode", help="fixed (new head on frozen features) or full."),
             freeze_to: str = typer.Option(None, "--freeze-to", help="Freeze up to and including STAGE (e.g. layer2)."),
             bn_stats: str = typer.Option("update", "--bn-stats", help="update (thesis) or freeze batch-norm stats."),
             num_classes: int = typer.Option(None, "--num-classes", help="Target classes (default: from the data)."),
             epochs: int = typer.Option(20, "--epochs", min=1),
             lr: float = typer.Option(None, "--lr", help="Default 0.01 for fixed, 0.001 for full (thesis)."),
             optimizer: str = typer.Option("sgd", "--optimizer"),
             schedule: str = typer.Option("cosine", "--schedule"),
             weight_decay: float = typer.Option(5e-4, "--weight-decay"),
             momentum: float = typer.Option(0.9, "--momentum"),
             step_every: int = typer.Option(0, "--step-every"),
             peak_epoch: float = typer.Option(0.0, "--peak-epoch"),
             augment: str = typer.Option("shift-flip", "--augment", help=AUGMENT_HELP),
             shift: int = typer.Option(0, "--shift"),
             flip: bool = typer.Option(False, "--flip/--no-flip"),
             amp: bool = typer.Option(False, "--amp"),
             sync_bn: bool = SYNC_BN_OPTION,
             recipe: str = RECIPE_OPTION,
             out: Path = typer.Option(..., "--out"),
             resume: bool = typer.Option(False, "--resume"),
             force: bool = typer.Option(False, "--force"),
             *, common: Common) -> None:
    """Transfer a source model to a target task; per-epoch metrics and a summary on stdout."""
    from confidently.fit import Fit, Stage, TransferFrom

    if mode not in ("fixed", "full"):
        raise UsageError(f"--mode {mode!r}: choose fixed or full")
    if bn_stats not in ("update", "freeze"):
        raise UsageError(f"--bn-stats {bn_stats!r}: choose update or freeze")
    config = train_config(common, recipe, {"optimizer": optimizer, "lr": lr if lr is not None else
                                           (0.01 if mode == "fixed" else 0.001), "weight_decay": weight_decay,
                                           "momentum": momentum, "epochs": epochs, "schedule": schedule,
                                           "step_every": step_every, "peak_epoch": peak_epoch, "augment": augment,
                                           "shift": shift, "flip": flip, "amp": amp, "sync_bn": sync_bn})
    config.freeze_bn = bn_stats == "freeze"
    origin = TransferFrom(source, mode, freeze_to, num_classes)
    validate = lambda model, batches: val_metrics(model, batches, None, common.seed)  # noqa: E731
    fit = Fit.start(out, "advtrain", data, split=split, model=origin, val=val, val_split=val_split,
                    validate=validate, force=force, resume=resume, **common.fit_options())
    if fit is None:
        return
    source_eps = origin.source.training_info.get("eps")

    def log_epoch(stage: Stage, metrics: dict[str, Any]) -> None:
        emit({"kind": "metric", "cmd": "transfer", "mode": mode, "source_eps": source_eps, "seed": common.seed,
              **metrics})

    fitted = fit.run([Stage("transfer", config)], on_epoch=log_epoch,
                     training={"source_file": str(source), "bn_stats": bn_stats})
    summary = {"kind": "summary", "cmd": "transfer", "mode": freeze_to and f"freeze_to:{freeze_to}" or mode,
               "source": str(source), "source_eps": source_eps,
               "source_constraint": origin.source.training_info.get("constraint"), "seed": common.seed,
               "out": str(out)}
    if fit.val_batches is not None:  # every rank scores its part; rank 0 prints
        metrics = validate(fitted.model, fit.val_batches)
        summary.update(top1=metrics["val_nat_acc"], mean_per_class=metrics["val_mpc_nat"])
    emit(summary, fit.ranks)


@app.command(epilog=examples("""
    # penultimate features of the test digits (features N x D and labels N in one safetensors shard)
    advtrain features --model robust.safetensors --data demo:digits --split test --out test-features.safetensors \\
      > test-features.jsonl
    # and of the adversarial images; each record says which row of the shard is its own
    advtrain features --model robust.safetensors --data adv.jsonl --out adv-features.safetensors > adv-features.jsonl
"""))
@common_options(uses={"device", "batch_size", "shard", "workers", "skip_invalid"}, oom_backoff=True)
def features(model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(..., "--data"),
             split: str = typer.Option(None, "--split"),
             out: Path = typer.Option(..., "--out", help="Safetensors shard: features N×D, labels N."),
             force: bool = typer.Option(False, "--force", help="Write over an --out advtrain did not write."),
             *, common: Common) -> None:
    """Penultimate features of a dataset as a safetensors shard (for fast linear probes)."""
    import torch
    from confidently.data import open_source
    from confidently.io.artifacts import artifact_metadata
    from confidently.io.shard_writer import ShardWriter
    from confidently.models import load_model
    from confidently.run.device import resolve_device

    guard_output(out, "advtrain", force=force)
    device = resolve_device(common.device)
    model = load_model(model_path, device).eval()
    dataset = open_source(data, split, channels=model.input_size[0])
    batches = eval_batches(dataset, model, common, device, labelled=False)
    shard = ShardWriter(out)
    records = []
    try:
        for batch in progress(batches, known_length(batches), "features"):
            shard.append(features=penultimate(model, batch.images), labels=batch.labels.cpu())
            for fields in batch.records:
                record = dict(fields)
                record["advtrain"] = {**record.get("advtrain", {}),
                                      "features": {"tensors": str(out), "key": "features", "index": len(records)}}
                records.append(record)
    except BaseException:
        shard.discard()
        raise
    shard.close(artifact_metadata(tool="advtrain", kind="features", config=common.config, seed=common.seed,
                                  ids=[record["id"] for record in records], classes=dataset.classes,
                                  model=str(model_path)),
                empty={"features": (torch.float32, (0,)), "labels": (torch.int64, ())})
    writer = RecordWriter()
    for record in records:
        writer.write(record)


def penultimate(model: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate features of one batch, computed in halves on CUDA out-of-memory."""
    import torch
    from confidently.run.device import with_batch_backoff

    def run(size: int) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.features(images[s:s + size]).float().cpu() for s in range(0, len(images), size)])

    return with_batch_backoff(run, max(1, len(images)))[0]


@app.command("import", epilog=examples("""
    # weights from elsewhere: a timm test_resnet's state dict (fresh, untrained), as safetensors and as a pickle
    python -c "import timm, torch, safetensors.torch as st; \\
      sd = timm.create_model('test_resnet', num_classes=10).state_dict(); \\
      st.save_file(sd, 'test_resnet.safetensors'); torch.save({'state_dict': sd}, 'test_resnet.pth')"
    advtrain import test_resnet.safetensors --arch test_resnet --out imported.safetensors
    # a pickle (.pt, .pth, .ckpt) can run code when loaded: only with --trust-pickle
    advtrain import test_resnet.pth --arch test_resnet --trust-pickle --out imported-pth.safetensors
    # an ordinary model file now (untrained: about chance)
    advtrain eval --model imported.safetensors --data digits.jsonl --eps 0 > imported.eval.jsonl
"""))
@common_options()
def import_weights(weights: Path = typer.Argument(..., help="State dict: .safetensors (or a pickle: --trust-pickle)."),
                   arch: str = typer.Option(..., "--arch", help="timm name (or tiny arch) the weights belong to."),
                   num_classes: int = typer.Option(None, "--num-classes", help="Default: read off the classifier."),
                   img_size: int = typer.Option(None, "--img-size"),
                   mean: str = typer.Option(None, "--mean", help="Normalisation mean, e.g. 0.485,0.456,0.406."),
                   std: str = typer.Option(None, "--std"),
                   classes_file: Path = typer.Option(None, "--classes", help="Text file with one class name per line."),
                   trust_pickle: bool = typer.Option(False, "--trust-pickle",
                                                     help="Allow loading a pickled checkpoint (it can run code)."),
                   out: Path = typer.Option(..., "--out"),
                   force: bool = typer.Option(False, "--force", help="Write over an --out advtrain did not write."),
                   *, common: Common) -> None:
    """Convert timm / torchvision / robustness-library weights into a confidently model file."""
    from confidently.models import create_model, save_model
    from confidently.models.convert import classifier_width, convert_state_dict, read_foreign_weights

    guard_output(out, "advtrain", force=force)
    if trust_pickle:
        console.print("[yellow]warning:[/] --trust-pickle: a pickled checkpoint can run arbitrary code when loaded")
    raw = read_foreign_weights(weights, trust_pickle)
    classes = num_classes or classifier_width(raw, arch, img_size)
    if not classes:
        raise UsageError("cannot tell the number of classes from the weights; give --num-classes")
    names = classes_file.read_text().split("\n") if classes_file else None
    names = [n for n in names if n] if names else None
    model = create_model(arch, classes, img_size=img_size, classes=names)
    state, normalization = convert_state_dict(raw, model.net)
    model.net.load_state_dict(state)
    parsed_mean = [float(v) for v in mean.split(",")] if mean else normalization.get("mean")
    parsed_std = [float(v) for v in std.split(",")] if std else normalization.get("std")
    if parsed_mean or parsed_std:
        model = create_model(arch, classes, img_size=img_size, classes=names, mean=tuple(parsed_mean or model.mean),
                             std=tuple(parsed_std or model.std))
        model.net.load_state_dict(state)
    save_model(model, out, training={"tool": "advtrain", "recipe": "imported", "source_file": weights.name})
    emit({"kind": "import", "cmd": "import", "arch": arch, "num_classes": classes, "mean": list(model.mean),
          "std": list(model.std), "out": str(out)})


def main() -> None:
    run_app(app, "advtrain")


if __name__ == "__main__":
    main()
