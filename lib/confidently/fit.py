"""One fit flow for every command that trains a model file (advtrain train and transfer, certify fit,
ablate fit): skip a finished ``out``, open the data, build or load the model, validate while training,
checkpoint every epoch, resume, and write the model file with how it was trained, and beside it the run's
config (``robust.safetensors`` → ``robust.config.yaml``, :mod:`confidently.io.run_config`).

Each epoch's metrics (``on_epoch``) have one shape whatever the command, for the report's training curves:
``stage``, ``out``, ``epoch``, ``epochs`` (of the stage), ``loss`` (train), ``train_acc`` (on the batches as
trained), ``train_nat_acc`` / ``train_adv_acc`` (before / after the attack where trained adversarially;
``train_nat_acc`` alone without a perturbation), ``lr``, the validation's ``val_*`` on the epochs validated
(``val_nat_acc``, and ``val_adv_acc`` where attacked; the default validation's ``val_acc`` also as
``val_nat_acc``) and ``seconds``. ``out`` and ``stage`` name the run.

What varies between the commands is where the model comes from (:class:`NewModel`, :class:`ModelFile`,
:class:`TransferFrom`), the stages it trains through (:class:`Stage`: a recipe, and optionally a hook
that replaces each batch, such as PGD or random ablations) and how validation is scored. Under ``torchrun``
validation is split as training is: ``validate(model, batches)`` runs on every rank with that rank's part of
the validation data and sums its counts over the ranks (:meth:`~confidently.training.Distributed.sum_tallies`),
so rank 0 reports what one process would.

    fit = Fit.start("robust.safetensors", "advtrain", "demo:digits", model=NewModel("tiny_resnet"), split="train")
    if fit is not None:  # None: the file is there already
        fit.run([Stage("train", config, perturb=AdversarialPerturb(attack))], training={"recipe": "adversarial"})
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from confidently import __version__
from confidently.adversarial import PGDConfig
from confidently.data.loader import StreamLoader
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.data.source import Source, check_labels, open_source
from confidently.errors import InvalidInput, UsageError
from confidently.evaluation import robustness_tallies
from confidently.io.atomic import guard_output, written_by
from confidently.io.run_config import config_path, config_text, write_config
from confidently.models import create_model, load_model, save_model
from confidently.models.classifier import Classifier
from confidently.run import console
from confidently.training import Distributed, Perturb, TrainConfig, accuracies, join_ranks, train_classifier
from confidently.transfer import replace_head, trainable_parameters, transfer_info

Validate = Callable[[Classifier, StreamLoader], dict[str, Any]]
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def validation_accuracy(model: Classifier, batches: StreamLoader) -> dict[str, Any]:
    """The default validation: top-1 accuracy as ``val_acc``, and as ``val_nat_acc`` (the name every trainer's
    clean validation accuracy has); under ``torchrun``, of every rank's part, counted together."""
    tallies = robustness_tallies(model, batches, [PGDConfig(eps=0.0)], num_classes=model.num_classes)[0]["nat"]
    accuracy = accuracies(Distributed.current().sum_tallies(tallies))[0]
    return {"val_acc": accuracy, "val_nat_acc": accuracy}


@dataclass
class Stage:
    """One training pass: its recipe, the hooks that change each batch, and whether it is validated."""

    name: str
    config: TrainConfig
    perturb: Perturb | None = None
    forward: Forward | None = None
    validate: bool = True


class ModelSource(ABC):
    """Where the model of a fit comes from."""

    channels: int = 3  # the data is opened with this many channels

    def prepare(self, device: torch.device) -> None:  # noqa: B027 - optional: a new model reads nothing first
        """Read what is needed before the data is opened (a model file's channels)."""

    @abstractmethod
    def build(self, data: Source, device: torch.device) -> Classifier:
        """The model to train, for ``data`` (labels checked against its classes)."""

    def trainable(self, model: Classifier) -> list[nn.Parameter] | None:
        """The parameters to optimise (None: all)."""
        return None

    def describe(self, model: Classifier, config: TrainConfig) -> dict[str, Any]:
        """What the model file's training metadata says of where the model came from."""
        return {}


def _require_labels(data: Source, num_classes: int | None) -> int:
    if not num_classes:
        raise InvalidInput(f"{data.name} has no labels; training needs labelled images", field="label")
    check_labels(data, num_classes)
    return num_classes


@dataclass
class NewModel(ModelSource):
    """A fresh ``arch`` for the data's classes, at ``img_size`` (default: the data's stored size)."""

    arch: str
    num_classes: int | None = None
    img_size: int | None = None

    def build(self, data: Source, device: torch.device) -> Classifier:
        classes = _require_labels(data, self.num_classes or data.num_classes)
        size = self.img_size or data.image_size()
        if self.img_size is None and getattr(data, "images", None) is None:
            console.log(f"training at {size} px, the first image's size (set the image size for another)")
        model = create_model(self.arch, classes, in_chans=data.image_shape()[0], img_size=size,
                             classes=data.classes if data.num_classes == classes else None)
        model.check_input(torch.zeros(1, *model.input_size))
        return model


@dataclass
class ModelFile(ModelSource):
    """Go on training a model file (fine-tuning; certify's stage 2 alone)."""

    path: Path
    model: Classifier | None = field(default=None, init=False, repr=False)

    def prepare(self, device: torch.device) -> None:
        self.model = load_model(self.path, device)
        self.channels = self.model.input_size[0]

    def build(self, data: Source, device: torch.device) -> Classifier:
        _require_labels(data, self.model.num_classes)
        self.model.check_input(torch.zeros(1, *self.model.input_size, device=device))
        return self.model


@dataclass
class TransferFrom(ModelSource):
    """A source model file with a new head for the target data's classes (:mod:`confidently.transfer`)."""

    path: Path
    mode: str = "fixed"
    freeze_to: str | None = None
    num_classes: int | None = None
    source: Classifier | None = field(default=None, init=False, repr=False)

    def prepare(self, device: torch.device) -> None:
        self.source = load_model(self.path, device)
        self.channels = self.source.input_size[0]

    def build(self, data: Source, device: torch.device) -> Classifier:
        found = data.num_classes
        if self.num_classes is not None and found and self.num_classes != found:
            raise InvalidInput(f"{data.name} has {found} classes but num_classes is {self.num_classes}; relabel "
                               "the target data or leave num_classes unset", field="label")
        classes = _require_labels(data, self.num_classes or found)
        target = replace_head(self.source, classes, data.classes if found == classes else None)
        target.training_info = {}  # the source's training is described under "source"
        return target

    def trainable(self, model: Classifier) -> list[nn.Parameter]:
        return trainable_parameters(model, self.mode, self.freeze_to)

    def describe(self, model: Classifier, config: TrainConfig) -> dict[str, Any]:
        return transfer_info(self.source, self.mode, self.freeze_to, config)


@dataclass
class Fitted:
    """A finished fit: the trained model, the metrics of the epochs this run trained, the data it saw."""

    model: Classifier
    history: list[dict[str, Any]]
    data: Source


def _once_per_record(report: Callable[[InvalidInput], None], ranks: Distributed) -> Callable[[InvalidInput], None]:
    """``report`` each bad image once, however many epochs and loaders meet it, and on rank 0 only."""
    seen: set[tuple[str | None, str]] = set()

    def once(error: InvalidInput) -> None:
        key = (error.record_id, error.message)
        if key not in seen and ranks.is_main:
            seen.add(key)
            report(error)

    return once


def _checkpoint_path(out: Path, stage: str | None) -> Path:
    """Beside ``out``: ``out.ckpt`` for a one-stage fit, ``out.STAGE.ckpt`` for each stage of several."""
    return out.with_name(f"{out.name}.ckpt" if stage is None else f"{out.name}.{stage}.ckpt")


def _checkpoints(out: Path) -> list[Path]:
    if not out.parent.is_dir():
        return []
    return [path for path in out.parent.iterdir() if path.name.startswith(out.name + ".")
            and path.name.endswith(".ckpt")]


def _describe_source(spec: str, split: str | None, data: Source) -> dict[str, Any]:
    """A data source as the run's config file records it: as given, and what was found there."""
    found: dict[str, Any] = {"source": spec, "split": split}
    try:
        found["images"] = len(data)
    except TypeError:  # a stream of unknown length
        pass
    found["classes"] = data.num_classes
    fingerprint = getattr(data, "fingerprint", None)
    found["fingerprint"] = fingerprint() if callable(fingerprint) else None
    return found


def _guard_config(path: Path, tool: str, force: bool, options_file: str | os.PathLike | None) -> None:
    """Refuse a config path holding someone else's file (unless forced), and always the --config file itself."""
    guard_output(path, tool, force=force)
    if options_file is not None and path.exists() and Path(options_file).exists() \
            and os.path.samefile(options_file, path) and written_by(path) != tool:
        raise UsageError(f"{path} is this run's --config file, where the run would write its own config; rename "
                         "it or choose another --out")


@dataclass
class Fit:
    """A fit in progress: made by :meth:`start`, trained and written by :meth:`run`."""

    out: Path
    tool: str
    data: Source
    model: Classifier
    source: ModelSource
    device: torch.device
    ranks: Distributed
    seed: int = 0
    val_batches: StreamLoader | None = None
    validate: Validate = validation_accuracy
    eval_every: int = 1
    workers: int | None = None
    resume: bool = False
    on_invalid: Callable[[InvalidInput], None] | None = None
    command: str | None = None  # what wrote the run, for its config file (default: the tool)
    options: dict[str, Any] | None = None  # the command's effective options
    explicit: list[str] = field(default_factory=list)  # those the user set (flag or --config)
    sources: dict[str, Any] = field(default_factory=dict)  # the data, as the config file records it

    @classmethod
    def start(cls, out: str | os.PathLike, tool: str, data: str, *, model: ModelSource, split: str | None = None,
              val: str | None = None, val_split: str | None = None, validate: Validate = validation_accuracy,
              eval_every: int = 1, device: str = "auto", batch_size: int = 64, workers: int | None = None,
              seed: int = 0, force: bool = False, resume: bool = False,
              on_invalid: Callable[[InvalidInput], None] | None = None, command: str | None = None,
              options: dict[str, Any] | None = None, explicit: Sequence[str] = (),
              options_file: str | os.PathLike | None = None) -> Fit | None:
        """Open the data and build the model for a fit writing ``out``; None when ``out`` is there already
        (unless ``force`` retrains or ``resume`` continues from the checkpoint beside it).

        An image that does not decode stops the fit naming it; with ``on_invalid`` it is left out of
        training and validation, and ``on_invalid(error)`` is told once per image (on rank 0).

        ``command``, its effective ``options``, the ``explicit`` ones the user set and the ``--config`` file
        (``options_file``) they came from go into the config file :meth:`run` writes beside ``out``
        (:func:`~confidently.io.run_config.config_path`); a user's file there is refused like ``out``.

        Under ``torchrun`` each rank joins the process group here and trains on its own part of the data.
        """
        out = Path(out)
        ranks, device = join_ranks(device)
        on_invalid = _once_per_record(on_invalid, ranks) if on_invalid is not None else None
        guard_output(out, tool, force=force)
        for checkpoint in _checkpoints(out):
            guard_output(checkpoint, "training", force=force)
        if out.exists() and not force and not resume:
            console.log(f"{out} exists: nothing to do (force retrains, resume continues)")
            return None
        _guard_config(config_path(out), tool, force, options_file)
        model.prepare(device)
        dataset = open_source(data, split, channels=model.channels)
        classifier = model.build(dataset, device)
        val_batches = None
        sources = {"train": _describe_source(data, split, dataset)}
        if val:
            val_data = open_source(val, val_split, channels=classifier.input_size[0])
            sources["val"] = _describe_source(val, val_split, val_data)
            val_batches = StreamLoader(val_data, make_preprocess("eval", DataConfig.of(classifier)),
                                       batch_size=batch_size, device=device, workers=workers, rank=ranks.rank,
                                       world=ranks.world,
                                       require_labels=not check_labels(val_data, classifier.num_classes),
                                       num_classes=classifier.num_classes, on_invalid=on_invalid,
                                       describe="validation")
        triggered = sum(1 for record in getattr(dataset, "records", ()) if record.data.get("trigger"))
        if triggered:
            console.log(f"{triggered} records carry a trigger: stamped after augmentation")
        return cls(out, tool, dataset, classifier, model, device, ranks, seed, val_batches, validate, eval_every,
                   workers, resume, on_invalid, command, options, list(explicit), sources)

    def training_info(self, stages: Sequence[Stage], training: dict[str, Any] | None = None) -> dict[str, Any]:
        """How the model is trained, as its file's metadata says (``training``): where the model came from,
        the tool, the command's own keys (``training``), the seed, the data's fingerprint and the recipe."""
        info = {**self.source.describe(self.model, stages[-1].config), "tool": self.tool, **(training or {}),
                "seed": self.seed, "data": self.data.fingerprint()}
        info.setdefault("config", stages[-1].config.as_dict())
        return info

    @property
    def config_file(self) -> Path:
        """The run's config file, beside ``out``."""
        return config_path(self.out)

    def write_config(self, stages: Sequence[Stage], training: dict[str, Any] | None = None) -> None:
        """Write the run's config beside ``out`` (atomically): the options set for it, and under ``confidently``
        the tool, command, version, every option's effective value, the data, each stage's recipe, the
        training metadata the model file will carry and the model."""
        command = self.command or self.tool
        model = {"arch": getattr(self.model, "arch", None), "num_classes": getattr(self.model, "num_classes", None),
                 "input_size": list(getattr(self.model, "input_size", ()) or ()) or None}
        resolved = {"version": __version__, "out": str(self.out), "seed": self.seed, "resume": self.resume,
                    "data": self.sources, "model": model,
                    "stages": [{"name": stage.name, "epochs": stage.config.epochs, "validated": stage.validate
                                and self.val_batches is not None, "config": stage.config.as_dict()}
                               for stage in stages],
                    "training": self.training_info(stages, training)}
        write_config(self.config_file, config_text(tool=self.tool, command=command, options=self.options,
                                                   explicit=self.explicit, resolved=resolved, out=self.out))

    def run(self, stages: Sequence[Stage], *, training: dict[str, Any] | None = None,
            on_epoch: Callable[[Stage, dict[str, Any]], None] | None = None) -> Fitted:
        """Write the run's config beside ``out`` (rank 0; :meth:`write_config`, again on resume), train through
        ``stages`` in turn (each checkpointed beside ``out`` after every epoch, so a resumed fit skips the
        finished ones), then write ``out`` (rank 0) with ``training`` in its metadata. ``on_epoch(stage,
        metrics)`` gets each epoch's metrics in the shape the module describes."""
        history: list[dict[str, Any]] = []
        parameters = self.source.trainable(self.model)
        checkpoints = [_checkpoint_path(self.out, stage.name if len(stages) > 1 else None) for stage in stages]
        if self.ranks.is_main:
            self.write_config(stages, training)
        for stage, checkpoint in zip(stages, checkpoints, strict=True):
            config = stage.config

            def evaluate(model: Classifier, epoch: int, stage: Stage = stage) -> dict[str, Any]:
                due = epoch % self.eval_every == 0 or epoch == stage.config.epochs
                if self.val_batches is None or not stage.validate or not due:
                    return {}
                return self.validate(model, self.val_batches)

            def log(metrics: dict[str, Any], stage: Stage = stage) -> None:
                metrics = {"stage": stage.name, "out": str(self.out), "epoch": metrics["epoch"],
                           "epochs": stage.config.epochs, **metrics}
                history.append(metrics)
                if on_epoch is not None:
                    on_epoch(stage, metrics)

            train_classifier(self.model, self.data, config, device=self.device, perturb=stage.perturb,
                             forward=stage.forward, parameters=parameters, evaluate=evaluate, on_epoch=log,
                             checkpoint=checkpoint, resume=self.resume, workers=self.workers,
                             on_invalid=self.on_invalid)
        for param in self.model.parameters():
            param.requires_grad_(True)
        if self.ranks.is_main:
            save_model(self.model, self.out, training=self.training_info(stages, training))
            for checkpoint in checkpoints:  # this fit's own checkpoints, guarded as the training's at start
                checkpoint.unlink(missing_ok=True)
            console.log(f"wrote {self.out}")
        return Fitted(self.model, history, self.data)
