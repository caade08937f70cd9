"""Supervised training of a :class:`~confidently.models.Classifier` on any dataset, streamed.

One loop for every tool that trains (advtrain, certify fit, plant-backdoor, influence):
optimizer and schedule by name; data through :mod:`confidently.data.loader` (workers decode,
augmentation per record seeded by (seed, id, epoch), shuffle by (seed, epoch), deferred
triggers stamped after augmentation); an optional ``perturb(model, images, labels, generator)``
hook through which adversarial training (or ablation as augmentation) replaces the batch; mixed
precision on CUDA; a checkpoint every epoch that ``resume`` continues bit-for-bit; on CUDA
out-of-memory, the step again in 2, 4, ... micro-batches with the same update; and data-parallel
training when launched by ``torchrun`` (each rank reads and augments its own part of every epoch,
batches of ``batch_size / world``, validates its part of the validation data; rank 0 writes).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from confidently.data.dataset import ImageDataset
from confidently.data.loader import ImageStream, StreamLoader
from confidently.data.preprocess import DataConfig, Preprocess, make_preprocess
from confidently.errors import InvalidInput, UsageError
from confidently.mixing import BatchMix
from confidently.recipes import TrainConfig
from confidently.registry import Registry
from confidently.run.console import console, progress
from confidently.run.device import is_out_of_memory
from confidently.run.seeding import record_generator

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
CHECKPOINT_FORMAT = "confidently.checkpoint/1"


OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[nn.Parameter], lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)


@OPTIMIZERS.register("adamw")
def _adamw(params: Iterable[nn.Parameter], lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    """A registered optimizer (``OPTIMIZERS``: sgd, adamw) over ``params``."""
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


def make_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedules: ``onecycle`` (cosine, 25 % warm-up), ``cyclic`` (linear 0 → lr at
    ``peak_epoch`` → 0), ``cosine``, ``step`` (÷10 every ``step_every`` epochs) and ``constant``."""
    total = max(config.epochs * steps_per_epoch, 1)
    name = config.schedule
    if name == "onecycle":
        warm = max(1, int(0.25 * total))

        def one_cycle(step: int) -> float:
            # cosine from lr/25 up to lr over the first quarter, then cosine down to ~0
            if step < warm:
                return 0.04 + 0.96 * (1 - math.cos(math.pi * step / warm)) / 2
            return 4e-6 + (1 - 4e-6) * (1 + math.cos(math.pi * min(step - warm, total - warm) /
                                                     max(total - warm, 1))) / 2

        return torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle)
    if name == "cyclic":
        peak = max(1, int((config.peak_epoch or config.epochs / 2) * steps_per_epoch))

        def triangle(step: int) -> float:
            return step / peak if step < peak else max(0.0, (total - step) / max(total - peak, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, triangle)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(  # clamped: a stream's batch count is an estimate
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    if name == "step":
        if config.step_every:
            every = config.step_every * steps_per_epoch
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1 ** (step // every))
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.1 ** ((step >= total * 0.5) + (step >= total * 0.75)))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise UsageError(f"unknown schedule {name!r}; choose onecycle, cyclic, cosine, step or constant")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Predicted classes of ``model`` (in eval mode) for float images in [0, 1]."""
    was_training = model.training
    model.eval()
    out = [model(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def evaluate_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on float images in [0, 1]."""
    return float((predict(model, images, batch_size, device) == labels).float().mean()) if len(images) else 0.0


def class_tallies(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, list[int]]:
    """Rows and correct predictions per class: the counts accuracies come from, and that shards sum."""
    labels, predictions = labels.cpu().long(), predictions.cpu().long()
    return {"class_n": torch.bincount(labels, minlength=num_classes).tolist(),
            "class_correct": torch.bincount(labels[predictions == labels], minlength=num_classes).tolist()}


def accuracies(tallies: dict[str, list[int]]) -> tuple[float | None, float | None]:
    """Top-1 accuracy and the mean of per-class recalls over the classes present (the thesis's metric for
    unbalanced datasets), from :func:`class_tallies`; None for no rows."""
    present = [(k, n) for k, n in zip(tallies["class_correct"], tallies["class_n"], strict=True) if n]
    if not present:
        return None, None
    total = sum(n for _, n in present)
    return sum(k for k, _ in present) / total, sum(k / n for k, n in present) / len(present)


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not distributed). ``joined``: in a process
    group, whose collectives run even for one rank (``torchrun --nproc-per-node 1`` exercises NCCL)."""

    rank: int = 0
    world: int = 1
    joined: bool = False

    @classmethod
    def current(cls) -> Distributed:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), True)
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (on the GPU under NCCL, which reduces no CPU tensor)."""
        if not self.joined:
            return list(values)
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_counts(self, counts: list[list[int]]) -> list[list[int]]:
        """Integer count rows summed over the ranks (exact: float64 holds integers up to 2⁵³)."""
        flat = self.sum(*(value for row in counts for value in row))
        out, start = [], 0
        for row in counts:
            out.append([round(value) for value in flat[start:start + len(row)]])
            start += len(row)
        return out

    def sum_tallies(self, tallies: Any) -> Any:
        """Counts of any shape (ints, and lists, dicts and None holding them) summed over the ranks: one
        all-reduce for the lot."""
        if not self.joined:
            return tallies
        flat: list[int] = []

        def gather(value: Any) -> None:
            if isinstance(value, dict):
                for item in value.values():
                    gather(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    gather(item)
            elif value is not None:
                flat.append(value)

        gather(tallies)
        summed = iter(round(value) for value in self.sum(*flat)) if flat else iter(())

        def rebuild(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: rebuild(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                return [rebuild(item) for item in value]
            return None if value is None else next(summed)

        return rebuild(tallies)

    def share_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch norm's running statistics, which each rank updates from its
        own batches), so that every rank holds the model rank 0 writes."""
        if not self.joined:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, 0)

    def part(self, index: int = 0, count: int = 1) -> tuple[int, int]:
        """This rank's share of part ``index`` of ``count`` (a ``--shard``), as (rank, world) of the whole."""
        return index + count * self.rank, count * self.world


TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets for env:// init


def init_distributed_from_env() -> Distributed:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA), even as its only rank."""
    if all(name in os.environ for name in TORCHRUN_ENV) and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Distributed.current()


def join_ranks(device: str = "auto") -> tuple[Distributed, torch.device]:
    """This process's rank (joining ``torchrun``'s group) and its device: a rank's own GPU under torchrun."""
    from confidently.run import resolve_device
    from confidently.run.console import logger

    ranks = init_distributed_from_env()
    resolved = resolve_device(device)
    if ranks.joined and resolved.type == "cuda":
        resolved = torch.device("cuda", torch.cuda.current_device())
    if ranks.joined and ranks.is_main:
        logger.info(f"torchrun: {ranks.world} rank(s), {dist.get_backend()} backend, rank 0 on {resolved}")
    return ranks, resolved


def sync_batch_norm(model: nn.Module, ranks: Distributed, device: torch.device) -> nn.Module:
    """``model`` with its batch norm layers as :class:`nn.SyncBatchNorm` under ``torchrun`` (statistics over
    the whole batch, not each rank's slice; same parameters and buffers); unchanged in one process."""
    if not ranks.joined:
        return model
    if device.type != "cuda":
        raise UsageError("sync_bn synchronises batch norm across GPUs (nn.SyncBatchNorm runs on CUDA only); "
                         "leave it off for ranks on the CPU")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class _CustomForward(nn.Module):
    """A model run through ``forward(model, images)`` as one module, so that DistributedDataParallel, which
    synchronises gradients of what runs through its own forward, can wrap it."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model, self.run = model, forward

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run(self.model, images)


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class Checkpoint:
    """Model, optimizer and RNG state after each epoch, in one safetensors file (no pickle)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
             history: list[dict[str, Any]], config: TrainConfig) -> None:
        from confidently.io.artifacts import artifact_metadata, save_artifact

        tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in state["state"].items():
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value.detach().cpu()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        tensors["rng.torch"] = torch.get_rng_state()
        meta = artifact_metadata(tool="training", kind="checkpoint", config=config.as_dict(), seed=config.seed,
                                 checkpoint_format=CHECKPOINT_FORMAT, epoch=epoch, history=history,
                                 param_groups=state["param_groups"], optimizer_scalars=scalars)
        save_artifact(self.path, tensors, meta)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict[str, Any]]]:
        from confidently.io.artifacts import load_artifact

        tensors, meta = load_artifact(self.path)
        if meta.get("checkpoint_format") != CHECKPOINT_FORMAT:
            raise InvalidInput(f"{self.path} is not a training checkpoint")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        for index, values in meta.get("optimizer_scalars", {}).items():
            state.setdefault(int(index), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        return int(meta["epoch"]), list(meta.get("history", []))


def train_preprocess(config: TrainConfig, model: nn.Module, data: ImageDataset | ImageStream) -> Preprocess:
    """The recipe's augmentation at the model's input size (the data's own size for a bare network)."""
    if hasattr(model, "arch") and hasattr(model, "input_size"):
        data_config = DataConfig.of(model)
    else:
        data_config = DataConfig(tuple(data.image_shape()[-2:]))
    if config.augment == "shift-flip":
        return make_preprocess("shift-flip", data_config, shift=config.shift, flip=config.flip)
    return make_preprocess(config.augment, data_config)


@torch.no_grad()
def _correct(local: nn.Module, images: torch.Tensor, target: torch.Tensor, device: torch.device, amp: bool) -> int:
    """How many of ``images`` the model (``local``: this rank's forward) gets right in the mode it trains in,
    leaving no trace: no gradient, the buffers (batch norm's running statistics) put back and the random
    draws (dropout) undone."""
    buffers = [(buffer, buffer.clone()) for buffer in local.buffers()]
    accelerator = device.type if device.type != "cpu" else None
    with torch.random.fork_rng(devices=[device] if accelerator else [], device_type=accelerator), \
            _autocast(device, amp):
        logits = local(images)
    for buffer, kept in buffers:
        buffer.copy_(kept)
    return int((logits.argmax(1) == target).sum())


class _Step:
    """One optimizer step on a batch, in ``micro`` micro-batches with their gradients accumulated.

    ``micro`` starts at 1 and doubles when a step runs out of CUDA memory: the step is redone in 2, 4, ...
    parts (each attacked, or otherwise perturbed, on its own: a record's random draws come from its own
    generator) and stays split for the rest of the run. Each part's loss is weighted by its share of the
    batch, so the update equals the whole batch's up to float round-off, for a model without batch norm
    (whose statistics are then each part's) or dropout (whose draws the failed attempt consumed). Under
    ``torchrun`` the gradients of all parts but the last stay local (``no_sync``): one all-reduce per step
    whatever a rank's split; with SyncBatchNorm, whose forward is a collective, there is no split.
    """

    def __init__(self, model: nn.Module, local: nn.Module, trained: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, config: TrainConfig, device: torch.device, perturb: Perturb | None,
                 attacked: bool, split_on_oom: bool):
        self.model, self.local, self.trained, self.optimizer, self.scaler = model, local, trained, optimizer, scaler
        self.config, self.device, self.perturb, self.attacked = config, device, perturb, attacked
        self.split_on_oom = split_on_oom
        self.micro = 1

    def __call__(self, images: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None, ids: list[str],
                 epoch: int, weight: float = 1.0) -> tuple[float, float, float]:
        """Train on the batch (its loss times ``weight``): (mean loss, rows right as trained, rows right before
        the attack)."""
        while True:
            try:
                result = self._accumulate(images, target, soft, ids, epoch, weight)
                break
            except Exception as error:  # noqa: BLE001 - re-raised unless it is an OOM we can split away
                if not (self.split_on_oom and is_out_of_memory(error)) or self.micro >= len(target):
                    raise
            # out of the handler, the failed attempt's tensors are free
            self.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.micro *= 2
            console.log(f"[yellow]out of memory: training each batch of {len(target)} rows in {self.micro} "
                        "micro-batches from now on (the same update)[/]")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return result

    def _accumulate(self, images: torch.Tensor, target: torch.Tensor, soft: torch.Tensor | None, ids: list[str],
                    epoch: int, weight: float) -> tuple[float, float, float]:
        rows = len(target)
        size = -(-rows // self.micro)
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = right = before = 0.0
        for start in range(0, rows, size):
            end = min(start + size, rows)
            x, y = images[start:end], target[start:end]
            if self.attacked:  # accuracy before the attack, as train_acc is measured after it
                before += _correct(self.local, x, y, self.device, self.config.amp)
            if self.perturb is not None:  # random starts drawn per record: the same whatever the batch or rank
                starts = [record_generator(self.config.seed, record_id, "attack", epoch)
                          for record_id in ids[start:end]]
                x = self.perturb(self.model, x, y, starts)
                _set_train_mode(self.model, self.config.freeze_bn)
            local_only = end < rows and isinstance(self.trained, nn.parallel.DistributedDataParallel)
            with self.trained.no_sync() if local_only else contextlib.nullcontext():
                with _autocast(self.device, self.config.amp):
                    logits = self.trained(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=self.config.label_smoothing) \
                        if soft is None else F.cross_entropy(logits.float(), soft[start:end])
                self.scaler.scale(loss * (weight * (end - start) / rows)).backward()
            total_loss += loss.item() * (end - start)
            right += float((logits.argmax(1) == y).sum())
        return total_loss / rows, right, before

    def idle(self, spare: tuple | None, epoch: int) -> None:
        """Take part in a step the other ranks take while this one has no rows left: its last batch (``spare``:
        images, labels, ids, soft targets) at weight 0, its buffers put back, so the collectives match."""
        if spare is None:
            raise UsageError("a rank has no training images: fewer images than torchrun ranks")
        images, target, ids, soft = spare
        if len(target) < 2:  # batch norm trains on two rows at least
            images, target, ids = images.repeat(2, *[1] * (images.dim() - 1)), target.repeat(2), ids * 2
            soft = soft.repeat(2, 1) if soft is not None else None
        buffers = [(buffer, buffer.clone()) for buffer in self.local.buffers()]
        self(images, target, soft, ids, epoch, weight=0.0)
        with torch.no_grad():
            for buffer, kept in buffers:
                buffer.copy_(kept)


def _aligned(batches: Iterable[Any], ranks: Distributed, batch_norm: bool) -> Iterable[tuple[Any, int]]:
    """Each batch with the rows trained on in its step over all ranks. Under ``torchrun`` every rank takes part
    in every step (its batch None once it has no more) until no rank has a batch left: ranks' parts of an epoch
    can differ by a batch, and a DistributedDataParallel step is a collective."""
    if not ranks.joined:
        for batch in batches:
            yield batch, len(batch.labels)
        return
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        usable = 0 if batch is None or (len(batch.labels) < 2 and batch_norm) else len(batch.labels)
        rows, left = ranks.sum(usable, batch is not None)
        if not left:
            return
        yield batch, round(rows)


def train_classifier(model: nn.Module, data: ImageDataset | ImageStream, config: TrainConfig, *,
                     device: torch.device | str = "cpu", perturb: Perturb | None = None,
                     evaluate: Callable[[nn.Module, int], dict[str, Any]] | None = None,
                     on_epoch: Callable[[dict[str, Any]], None] | None = None,
                     parameters: Iterable[nn.Parameter] | None = None,
                     forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                     checkpoint: str | os.PathLike | None = None, resume: bool = False,
                     preprocess: Preprocess | None = None, workers: int | None = None,
                     on_invalid: Callable[[InvalidInput], None] | None = None) -> nn.Module:
    """Train ``model`` in place on ``data``: any :class:`ImageDataset` (:meth:`ImageDataset.from_tensors`
    wraps tensors already in memory) or an :class:`ImageStream` of known length (tar shards made by
    ``dataset pack``: shards and a buffer shuffled by (seed, epoch); labels checked as they stream).

    Each epoch streams ``data`` through ``preprocess`` (default :func:`train_preprocess`: the recipe's
    augmentation) in ``workers`` processes; records' deferred triggers are stamped after it, where
    they were placed, whatever the crop. ``parameters`` restricts what is optimised (fixed-feature
    transfer trains the head only). ``forward(model, batch)`` replaces ``model(batch)`` (certify trains
    ViTs on kept tokens only). ``evaluate(model, epoch)`` adds validation metrics to each epoch's record:
    under ``torchrun`` every rank calls it, holding rank 0's model, to score its own part of the validation
    data and sum the counts (:meth:`Distributed.sum_tallies`), so each does 1/world of the work.
    ``on_epoch`` receives ``{"epoch", "loss", "train_acc", "lr", "seconds", ...}``
    (on rank 0 only): ``train_acc`` on the batches as trained, and ``train_nat_acc`` on them before any
    perturbation: the same without ``perturb``; with an adversarial one (``perturb.adversarial``) measured
    before the attack, in the same mode (one forward more per batch, which changes nothing of the training),
    and ``train_adv_acc`` (= ``train_acc``) after it. With ``checkpoint``, state is saved after every epoch;
    ``resume`` continues from it.
    ``config.mixup`` / ``config.cutmix`` mix each batch (:class:`~confidently.mixing.BatchMix`) before ``perturb``.
    ``config.sync_bn`` turns batch norm into :class:`nn.SyncBatchNorm` under ``torchrun`` (nothing in one process).
    A step that runs out of CUDA memory is redone in micro-batches (:class:`_Step`).
    An image that does not decode stops training naming its record, or with ``on_invalid`` is left out
    (``on_invalid(error)`` is called each epoch it is met).
    """
    num_classes = getattr(model, "num_classes", None)
    streamed = isinstance(data, ImageStream)
    try:
        size = len(data)
    except TypeError:
        raise UsageError(f"{data.name}: training needs the sample count, and these tar shards have no "
                         "pack.json beside them (make them with `dataset pack`)") from None
    if size == 0:
        raise UsageError("no training images")
    if not streamed:
        labels = data.labels
        if int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes):
            raise InvalidInput(f"training labels span {int(labels.min())}..{int(labels.max())} but the model has "
                               f"{num_classes} classes (set --num-classes to match the data; every training "
                               "record needs a label)", field="label")
    device = torch.device(device)
    ranks = Distributed.current()
    model.to(device)
    if config.sync_bn:
        model = sync_batch_norm(model, ranks, device)
    local = _CustomForward(model, forward) if forward is not None else model  # this rank's forward
    trained = local
    if ranks.joined:  # buffers stay each rank's own (rank 0's are shared before validating and at the end)
        device_ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(local, device_ids=device_ids, broadcast_buffers=False,
                                                      find_unused_parameters=forward is not None)
    batches = StreamLoader(data, preprocess or train_preprocess(config, model, data),
                           batch_size=max(1, config.batch_size // ranks.world), device=device, workers=workers,
                           seed=config.seed, shuffle=True, rank=ranks.rank, world=ranks.world,
                           require_labels=streamed, num_classes=num_classes if streamed else None,
                           on_invalid=on_invalid)
    mix = None
    if config.mixup or config.cutmix:
        if num_classes is None:
            raise UsageError("mixup and cutmix need a model with num_classes (soft targets)")
        mix = BatchMix(config.mixup, config.cutmix, label_smoothing=config.label_smoothing)
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    optimizer = make_optimizer(config.optimizer, params, config.lr, config.weight_decay, config.momentum)
    steps_per_epoch = len(batches)
    schedule = make_schedule(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    batch_norm = not config.freeze_bn and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    start_epoch, history = 0, []
    attacked = perturb is not None and getattr(perturb, "adversarial", False)
    step = _Step(model, local, trained, optimizer, scaler, config, device, perturb, attacked,
                 split_on_oom=not (ranks.joined and config.sync_bn))
    store = Checkpoint(checkpoint) if checkpoint is not None else None
    if resume and store is not None and store.path.exists():
        start_epoch, history = store.load(model, optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fast-forwarding the schedule without optimizer steps
            for _ in range(start_epoch * steps_per_epoch):
                schedule.step()
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        _set_train_mode(model, config.freeze_bn)
        total_loss = correct = seen = clean = 0.0
        spare = None  # under torchrun: this rank's last batch, for the steps it takes part in with no rows
        for batch, step_rows in _aligned(progress(batches.epoch(epoch), steps_per_epoch,
                                                  f"epoch {epoch + 1}/{config.epochs}"), ranks, batch_norm):
            if batch is None or (len(batch.labels) < 2 and batch_norm):
                # batch norm cannot train on one row (a last batch of one, or one left by skipped images)
                if ranks.joined and step_rows:  # the other ranks step: this one takes part at weight 0
                    if spare is None and batch is not None:
                        spare = (batch.images, batch.labels, batch.ids, None)
                    step.idle(spare, epoch)
                    schedule.step()
                continue
            images, target = batch.images, batch.labels
            soft = None  # mixed images' targets (label smoothing included)
            if mix is not None:
                images, soft = mix(images, target, batch.ids, num_classes, config.seed, epoch)
            rows = len(target)
            # each rank's mean loss weighted by its share of the step's rows: the gradient DDP averages is the
            # mean over all of them, however the rows fall between the ranks
            loss, right, before = step(images, target, soft, batch.ids, epoch, rows * ranks.world / step_rows)
            spare = (images, target, batch.ids, soft)
            schedule.step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"the training loss became {loss} in epoch {epoch + 1}; "
                                         "lower the learning rate (or eps)")
            total_loss += loss * rows
            correct += right
            clean += before
            seen += rows
        total_loss, correct, seen, clean = ranks.sum(total_loss, correct, seen, clean)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1),
                                   "train_acc": correct / max(seen, 1)}
        if perturb is None:
            metrics["train_nat_acc"] = metrics["train_acc"]
        elif attacked:
            metrics.update(train_nat_acc=clean / max(seen, 1), train_adv_acc=metrics["train_acc"])
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        ranks.share_buffers(model)
        if evaluate is not None:  # every rank: each scores its part of the validation data
            metrics.update(evaluate(model, epoch + 1))
        metrics["seconds"] = time.perf_counter() - started
        history.append(metrics)
        if store is not None and ranks.is_main:
            store.save(model, optimizer, epoch + 1, history, config)
        if on_epoch is not None and ranks.is_main:
            on_epoch(metrics)
    model.eval()
    return model
