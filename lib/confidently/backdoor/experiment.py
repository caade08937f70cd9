"""The bias-transfer grid (thesis §7.2): poisoned vs clean source × transfer mode × weight decay ×
target de-biasing × seeds; one record per run, then mean and spread per setting.

Every training goes through :func:`~confidently.training.train_classifier` and
:func:`~confidently.transfer.transfer` (the recipes ``advtrain`` uses); poisoned rows
carry their trigger as a record field, which the data loader stamps after augmentation.
Under ``torchrun`` (the caller joins the ranks) every training is data-parallel and every rank
scores its part of each test split, the counts summed: each rank yields the same records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from confidently.backdoor.grid_recipes import GRID_RECIPES
from confidently.backdoor.metrics import bias_from_tallies, bias_tallies, triggered_predictions
from confidently.backdoor.poison import SELECTION_SEED, fraction_of_rows, parse_classes, select_poison
from confidently.data.dataset import ImageDataset
from confidently.data.source import open_dataset
from confidently.data.triggers import make_stamp
from confidently.errors import UsageError
from confidently.io.records import Record
from confidently.models import create_model
from confidently.models.classifier import Classifier
from confidently.recipes import recipe_config
from confidently.run.seeding import derive_seed
from confidently.training import Distributed, TrainConfig, train_classifier
from confidently.transfer import transfer

MODES = ("fixed", "full", "scratch")


def grid_configs(name: str, epochs_source: int | None = None, epochs_target: int | None = None,
                 ) -> tuple[TrainConfig, TrainConfig]:
    """The source and target training configs of grid recipe ``name`` (epochs overridden when given)."""
    if name not in GRID_RECIPES:
        raise UsageError(f"grid recipe {name!r}: choose {', '.join(GRID_RECIPES)}")
    source, target = GRID_RECIPES[name]
    return (recipe_config(source, {"epochs": epochs_source}, ["epochs"]),
            recipe_config(target, {"epochs": epochs_target}, ["epochs"]))


@dataclass(frozen=True)
class Split:
    """A task's records (their images stream when a model trains or is evaluated on them), its labels
    (poisoning relabels some) and the image side its models are built for."""

    data: ImageDataset
    labels: torch.Tensor
    size: int

    @property
    def ids(self) -> list[str]:
        return self.data.ids

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def dataset(self, triggers: Sequence[dict[str, Any] | None] | None = None) -> ImageDataset:
        """The rows with these labels as a dataset; ``triggers`` (one per row, None: clean) are stamped last."""
        records = []
        for row, record in enumerate(self.data.records):
            fields = {**record.data, "label": int(self.labels[row])}
            if triggers is not None and triggers[row]:
                fields["trigger"] = triggers[row]
            records.append(Record(fields, record.line, record.source, record.base_dir))
        return ImageDataset(records, name=self.data.name, classes=self.data.classes, images=self.data.images,
                            channels=self.data.channels)

    @classmethod
    def from_dataset(cls, dataset: ImageDataset, classes: Sequence[int] | None = None,
                     size: int | None = None) -> Split:
        """The rows of ``classes`` (relabelled 0..k-1 in the given order); records' own deferred triggers are
        stamped whenever their images are used."""
        data = dataset.select_classes(classes) if classes is not None else dataset
        if not len(data):
            raise UsageError(f"no row is labelled with the classes {list(classes or [])}")
        return cls(data, data.labels.clone(), size or data.image_size())

    @classmethod
    def open(cls, source: str, split: str | None = None, classes: str | None = None, size: int | None = None
             ) -> Split:
        """The split a user names: data (manifest, folder, shard, ``demo:NAME``), ``classes`` as text
        (``0-4``: those rows, relabelled 0..k-1) and the image side (default the data's own)."""
        dataset = open_dataset(source, split)
        chosen = sorted(parse_classes(classes, dataset.num_classes or None)) if classes else None
        return cls.from_dataset(dataset, chosen, size)


@dataclass(frozen=True)
class Poisoning:
    """How the source is poisoned: ``mode`` group (labels kept) or relabel, at each of ``rates`` (0 = clean)."""

    mode: str = "relabel"
    rates: tuple[float, ...] = (0.0, 0.1)
    group: frozenset[int] = frozenset()
    target_label: int | None = 0
    rate_of: str | None = None
    selection_seed: int = SELECTION_SEED


@dataclass(frozen=True)
class Grid:
    modes: tuple[str, ...] = ("fixed", "full", "scratch")
    weight_decays: tuple[float, ...] = (5e-4,)
    debias_rates: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    source_config: TrainConfig = field(default_factory=lambda: grid_configs("bias-cpu")[0])
    target_config: TrainConfig = field(default_factory=lambda: grid_configs("bias-cpu")[1])

    def check(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise UsageError(f"--modes {','.join(unknown)}: choose from {', '.join(MODES)}")
        if any(not 0 <= r <= 1 for r in self.debias_rates):
            raise UsageError("--debias-rate values must lie in [0, 1]")


def _asr(model: Classifier, split: Split, trigger: dict[str, Any], batch_size: int, device, **kwargs) -> dict:
    """:func:`bias_metrics` of ``model`` on ``split``; under ``torchrun`` each rank scores its part and the
    counts are summed, so every rank gets the figures of the whole split."""
    ranks = Distributed.current()
    clean, triggered, labels = triggered_predictions(model, split.dataset(), trigger, batch_size=batch_size,
                                                     device=device, rank=ranks.rank, world=ranks.world)
    tallies = ranks.sum_tallies(bias_tallies(clean, triggered, labels, model.num_classes, **kwargs))
    return bias_from_tallies(tallies)


def poison_split(split: Split, poisoning: Poisoning, rate: float, trigger: dict[str, Any]) -> tuple[Split, list]:
    """The source with ``rate`` poisoned: relabelled labels and the per-row triggers (None: clean)."""
    if rate == 0:
        return split, [None] * len(split.ids)
    plan = select_poison(split.ids, split.labels.tolist(), rate=rate, mode=poisoning.mode,
                         group=set(poisoning.group), rate_of=poisoning.rate_of, seed=poisoning.selection_seed,
                         target_label=poisoning.target_label, num_classes=split.num_classes)
    labels = split.labels.clone()
    for row, label in plan.new_labels.items():
        labels[row] = label
    specs: list = [None] * len(split.ids)
    for row in plan.rows:
        specs[row] = trigger
    return replace(split, labels=labels), specs


def run_grid(source: Split, source_test: Split, target: Split, target_test: Split, trigger: dict[str, Any],
             poisoning: Poisoning, grid: Grid, *, device: torch.device | str = "cpu", batch_size: int = 256,
             log: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """One record per (source rate, seed, mode, weight decay, de-bias rate).

    A source model is trained once per (rate, seed) and fanned out to every target run.
    """
    grid.check()
    make_stamp(trigger, (source.data.raw(0).shape[0], source.size, source.size))  # a bad trigger fails before training
    for rate in poisoning.rates:
        for seed in grid.seeds:
            started = time.perf_counter()
            poisoned, specs = poison_split(source, poisoning, rate, trigger)
            torch.manual_seed(derive_seed(seed, "source-init") % 2**63)
            src_model = create_model(grid.arch, source.num_classes, in_chans=source.data.raw(0).shape[0],
                                     img_size=source.size, **grid.arch_kwargs)
            train_classifier(src_model, poisoned.dataset(specs), replace(grid.source_config, seed=seed),
                             device=device)
            exclude = set(poisoning.group) if poisoning.mode == "group" else None
            target_label = poisoning.target_label if poisoning.mode == "relabel" else None
            src = _asr(src_model, source_test, trigger, batch_size, device,
                       target_label=target_label if target_label is not None and target_label >= 0 else None,
                       exclude=exclude)
            source_seconds = time.perf_counter() - started
            if log:
                log(f"source rate {rate} seed {seed}: clean acc {src['clean_acc']:.3f}, ASR {src['asr']}")
            for debias in grid.debias_rates:
                debias_specs = [None] * len(target.ids)
                for row in fraction_of_rows(target.ids, target.labels.tolist(), debias, seed, "debias"):
                    debias_specs[row] = trigger
                for mode in grid.modes:
                    for wd in grid.weight_decays:
                        started = time.perf_counter()
                        config = replace(grid.target_config, weight_decay=wd, seed=seed)
                        if mode == "scratch":
                            torch.manual_seed(derive_seed(seed, "scratch-init") % 2**63)
                            model = create_model(grid.arch, target.num_classes, in_chans=target.data.raw(0).shape[0],
                                                 img_size=target.size, **grid.arch_kwargs)
                            train_classifier(model, target.dataset(debias_specs), config, device=device)
                        else:
                            torch.manual_seed(derive_seed(seed, "head-init") % 2**63)
                            model = transfer(src_model, target.dataset(debias_specs), config, mode=mode,
                                             num_classes=target.num_classes, device=device)
                        tgt = _asr(model, target_test, trigger, batch_size, device)
                        yield {"kind": "run", "tool": "plant-backdoor", "poison_mode": poisoning.mode,
                               "source_rate": rate, "mode": mode, "wd": wd, "debias_rate": debias, "seed": seed,
                               "source_clean_acc": src["clean_acc"], "source_asr": src["asr"],
                               "source_asr_targeted": src["asr_targeted"], "target_clean_acc": tgt["clean_acc"],
                               "asr": tgt["asr"], "delta_acc": tgt["delta_acc"], "tv_pred_shift": tgt["tv_pred_shift"],
                               "source_time_s": round(source_seconds, 3),
                               "time_s": round(time.perf_counter() - started, 3)}


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and n of each metric per (poison mode, source rate, mode, wd, de-bias rate)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        key = (run["poison_mode"], run["source_rate"], run["mode"], run["wd"], run["debias_rate"])
        groups.setdefault(key, []).append(run)
    settings = []
    for key, members in sorted(groups.items(), key=lambda item: tuple(map(str, item[0]))):
        row: dict[str, Any] = dict(zip(("poison_mode", "source_rate", "mode", "wd", "debias_rate"), key, strict=True))
        row["n"] = len(members)
        for metric in ("asr", "target_clean_acc", "delta_acc", "source_asr", "source_clean_acc"):
            values = [m[metric] for m in members if m.get(metric) is not None]
            mean = math.fsum(values) / len(values) if values else None
            spread = (math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
                      if len(values) > 1 else 0.0 if values else None)
            row[metric] = {"mean": mean, "std": spread}
        settings.append(row)
    return {"kind": "summary", "tool": "plant-backdoor", "runs": len(runs), "settings": settings}
