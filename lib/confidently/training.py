"""Supervised training of a :class:`~confidently.models.Classifier` on in-memory tensors.

One loop for every tool that trains (advtrain, certify fit, plant-backdoor, influence):
optimizer and schedule by name, seeded shuffling and augmentation, an optional
``perturb(model, images, labels)`` hook through which adversarial training (or ablation as
augmentation) replaces the batch, and per-epoch metrics handed to a callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from confidently.data.transforms import random_flip, random_shift
from confidently.errors import UsageError

Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """The recipe; stored in the model file's metadata."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    momentum: float = 0.9
    shift: int = 0
    flip: bool = False
    label_smoothing: float = 0.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise UsageError(f"unknown optimizer {name!r}; choose sgd or adamw")


def make_schedule(name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedules: ``onecycle``/``cyclic`` (triangular warm-up then decay), ``cosine``, ``step``
    (÷10 at 50 % and 75 %), ``constant``."""
    total_steps = max(total_steps, 1)
    if name in ("onecycle", "cyclic"):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                   pct_start=0.25 if name == "onecycle" else 0.5,
                                                   anneal_strategy="cos" if name == "onecycle" else "linear")
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    if name == "step":
        milestones = [int(total_steps * 0.5), int(total_steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise UsageError(f"unknown schedule {name!r}; choose onecycle, cyclic, cosine, step or constant")


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on float images in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        correct += int((model(batch).argmax(1).cpu() == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(images), 1)


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, *,
                     device: torch.device | str = "cpu", perturb: Perturb | None = None,
                     eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                     on_epoch: Callable[[dict[str, Any]], None] | None = None,
                     parameters=None) -> nn.Module:
    """Train ``model`` in place on float images in [0, 1] with integer labels.

    ``parameters`` restricts what is optimised (fixed-feature transfer trains the head only).
    ``on_epoch`` receives ``{"epoch", "loss", "train_acc", "test_acc"?, "lr", "seconds"}``.
    """
    if len(images) == 0:
        raise UsageError("no training images")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"training labels span {int(labels.min())}..{int(labels.max())} but the model has "
                         f"{num_classes} classes (set --num-classes to match the data)")
    model.to(device)
    params = list(parameters if parameters is not None else model.parameters())
    optimizer = make_optimizer(config.optimizer, params, config.lr, config.weight_decay, config.momentum)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    schedule = make_schedule(config.schedule, optimizer, config.lr, steps_per_epoch * config.epochs, steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, len(images), config.batch_size):
            index = order[start:start + config.batch_size]
            batch, target = images[index], labels[index]
            if config.shift:
                batch = random_shift(batch, config.shift, generator)
            if config.flip:
                batch = random_flip(batch, generator)
            batch, target = batch.to(device), target.to(device)
            if perturb is not None:
                batch = perturb(model, batch, target)
                model.train()
            logits = model(batch)
            loss = F.cross_entropy(logits, target, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == target).sum())
        metrics: dict[str, Any] = {"epoch": epoch + 1, "loss": total_loss / len(images),
                                   "train_acc": correct / len(images), "lr": optimizer.param_groups[0]["lr"]}
        if eval_data is not None:
            metrics["test_acc"] = evaluate_accuracy(model, *eval_data, device=device)
        metrics["seconds"] = time.perf_counter() - started
        if on_epoch is not None:
            on_epoch(metrics)
    model.eval()
    return model
