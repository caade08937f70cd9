"""Transfer a trained source model to a new target task (thesis ch. 2).

The head is always replaced by a freshly initialised linear layer for the target classes.
``fixed`` trains only that head on frozen features — the model stays in train mode, so
batch-norm running statistics keep updating, as in the thesis; ``full`` fine-tunes every
weight; ``freeze_to=STAGE`` freezes every parameter up to and including the named stage
(e.g. ``layer2`` of a ResNet, ``blocks.1`` of a ViT) and trains the rest.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from confidently.data.dataset import ImageDataset
from confidently.data.loader import ImageStream
from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.training import TrainConfig, train_classifier

TRANSFER_MODES = ("fixed", "full")


def replace_head(model: Classifier, num_classes: int, classes: list[str] | None = None) -> Classifier:
    """A copy of ``model`` with a new, freshly initialised classifier for ``num_classes``."""
    target = copy.deepcopy(model)
    if not hasattr(target.net, "reset_classifier"):
        raise UsageError(f"{model.arch} has no reset_classifier(); transfer needs a timm-style model")
    target.net.reset_classifier(num_classes)
    target.num_classes = num_classes
    target.classes = list(classes) if classes is not None else None
    return target


def head_parameters(model: Classifier) -> list[nn.Parameter]:
    return list(model.net.get_classifier().parameters())


def trainable_parameters(model: Classifier, mode: str = "full", freeze_to: str | None = None) -> list[nn.Parameter]:
    """Freeze what ``mode``/``freeze_to`` says and return the parameters left to train."""
    if freeze_to is not None:
        names = [name for name, _ in model.net.named_parameters()]
        matches = [i for i, name in enumerate(names) if name == freeze_to or name.startswith(freeze_to + ".")]
        if not matches:
            stages = sorted({name.split(".")[0] for name in names})
            raise UsageError(f"--freeze-to {freeze_to!r} names no part of {model.arch}; its parts are "
                             f"{', '.join(stages)} (use e.g. layer2 or blocks.1)")
        last = max(matches)
        for index, (_, param) in enumerate(model.net.named_parameters()):
            param.requires_grad_(index > last)
    elif mode == "fixed":
        head = {id(p) for p in head_parameters(model)}
        for param in model.net.parameters():
            param.requires_grad_(id(param) in head)
    elif mode == "full":
        for param in model.net.parameters():
            param.requires_grad_(True)
    else:
        raise UsageError(f"unknown transfer mode {mode!r}; choose {' or '.join(TRANSFER_MODES)}")
    return [p for p in model.parameters() if p.requires_grad]


def transfer(source: Classifier, data: ImageDataset | ImageStream, config: TrainConfig, *,
             mode: str = "fixed", freeze_to: str | None = None, num_classes: int | None = None,
             classes: list[str] | None = None, **train_kwargs: Any) -> Classifier:
    """Train a new head (and, unless fixed, more) of ``source`` on the target data; returns the new model.

    ``train_kwargs`` go to :func:`~confidently.training.train_classifier` (device, evaluate,
    on_epoch, checkpoint, resume). A stream (tar shards) needs ``num_classes`` or a pack's class count.
    """
    num_classes = num_classes or data.num_classes or (int(data.labels.max()) + 1)
    target = replace_head(source, num_classes, classes)
    params = trainable_parameters(target, mode, freeze_to)
    train_classifier(target, data, config, parameters=params, **train_kwargs)
    for param in target.parameters():
        param.requires_grad_(True)
    target.training_info = transfer_info(source, mode, freeze_to, config)
    return target


def transfer_info(source: Classifier, mode: str, freeze_to: str | None, config: TrainConfig) -> dict[str, Any]:
    """A transferred model's training metadata: how it was transferred, and from what."""
    return {"recipe": "transfer", "mode": "freeze_to:" + freeze_to if freeze_to else mode, "config": config.as_dict(),
            "source": {"arch": source.arch, "num_classes": source.num_classes, "training": source.training_info}}
