"""Training recipes, registered by name, and the one rule that merges a recipe with a user's settings.
:class:`TrainConfig` (the settings a recipe sets) lives here, free of torch, so a command's ``--help`` can
list the recipes without loading it.

A recipe is a set of :class:`~confidently.training.TrainConfig` values (optimizer, schedule, epochs,
augmentation...). Every command that trains takes one by ``--recipe`` and applies :func:`recipe_config`:
the command's own defaults, then the recipe's values, then whatever the user set explicitly. Adding a
recipe is one :func:`register_recipe` call; every training command can use it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from confidently.errors import UsageError
from confidently.registry import Registry


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
    step_every: int = 0  # ``step`` schedule: divide by 10 every N epochs (0: at 50 % and 75 %)
    peak_epoch: float = 0.0  # ``cyclic`` schedule: epoch of the peak (0: the middle)
    augment: str = "shift-flip"  # a registered preprocess; shift-flip uses ``shift`` and ``flip``
    shift: int = 0
    flip: bool = False
    label_smoothing: float = 0.0
    mixup: float = 0.0  # DeiT's batch mixing (confidently.mixing): mixup and cutmix α; 0 and 0: off
    cutmix: float = 0.0
    freeze_bn: bool = False
    sync_bn: bool = False  # under torchrun on GPUs: batch norm over the whole batch (nn.SyncBatchNorm)
    amp: bool = False
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


RECIPES: Registry[dict[str, Any]] = Registry("recipe")
list_recipes = RECIPES.names


def register_recipe(name: str, **values: Any) -> None:
    """``values``: TrainConfig fields (not ``seed``, which is the run's)."""
    known = {f.name for f in fields(TrainConfig)} - {"seed"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"recipe {name!r}: unknown training settings {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    RECIPES.register(name)(dict(values))


def recipe_config(name: str | None, settings: Mapping[str, Any] | None = None, explicit: Collection[str] = (), *,
                  seed: int = 0) -> TrainConfig:
    """The training config of a run: ``settings`` the command passes (its flags' values; None means unset),
    overridden by recipe ``name`` (None: no recipe), overridden again by the settings named in ``explicit``
    (the ones the user gave), so a user's flag always wins and a recipe beats a flag's default."""
    settings = {key: value for key, value in (settings or {}).items() if value is not None}
    values = {**settings, **(RECIPES.get(name) if name is not None else {}),
              **{key: settings[key] for key in explicit if key in settings}}
    return TrainConfig.from_dict({**values, "seed": seed})


# advtrain's (thesis ch. 2): a demo-sized run, the CIFAR and ImageNet robust-training recipes, transfer.
register_recipe("demo", optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, batch_size=64, epochs=30,
                schedule="cyclic", peak_epoch=6)
register_recipe("cifar", optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, batch_size=128, epochs=150,
                schedule="step", step_every=50, shift=4, flip=True)
register_recipe("imagenet-robust", optimizer="sgd", lr=0.1, weight_decay=1e-4, momentum=0.9, batch_size=512,
                epochs=90, schedule="step", step_every=30, augment="robustness-imagenet")
register_recipe("transfer-thesis", optimizer="sgd", weight_decay=5e-4, momentum=0.9, batch_size=64, epochs=150,
                schedule="step", step_every=50, flip=True)
# ablate fit's (thesis ch. 5): a CPU-sized run, and the thesis's ResNet and DeiT trainings.
register_recipe("cpu-tiny", optimizer="adamw", lr=1e-3, weight_decay=0.0, batch_size=32, epochs=12,
                schedule="cosine")
register_recipe("thesis-resnet", optimizer="sgd", lr=0.1, weight_decay=1e-4, momentum=0.9, batch_size=512,
                epochs=90, schedule="step", step_every=30, augment="train")
register_recipe("thesis-deit", optimizer="adamw", lr=5e-4, weight_decay=0.05, batch_size=512, epochs=300,
                schedule="cosine", label_smoothing=0.1, augment="deit", mixup=0.8, cutmix=1.0)
# plant-backdoor's grid (thesis ch. 7): source and target trainings of the CPU pilot and of App. G.1.1 / G.1.2.
register_recipe("bias-cpu-source", epochs=30, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.9,
                weight_decay=5e-4, schedule="cyclic", peak_epoch=5)
register_recipe("bias-cpu-target", epochs=30, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9,
                weight_decay=5e-4, schedule="cyclic", peak_epoch=5)
register_recipe("bias-thesis-source", epochs=16, batch_size=1024, lr=0.5, optimizer="sgd", momentum=0.9,
                weight_decay=5e-4, schedule="cyclic", peak_epoch=2, flip=True)
register_recipe("bias-thesis-target", epochs=15, batch_size=1024, lr=0.1, optimizer="sgd", momentum=0.9,
                weight_decay=5e-4, schedule="cyclic", peak_epoch=5, flip=True)
