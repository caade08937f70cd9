"""What one influence job trains: pre-train on the included source units, transfer to every target task,
and return each task's logits on its test examples. Recipes are registered by kind:

- ``image``: a recipe file (TOML, YAML or JSON) naming a source dataset, its architecture and recipe,
  and target tasks (fixed-feature or full transfer) — through the shared trainer and transfer;
- ``demo-shapes``: the built-in CPU recipe on ``demo:shapes`` (source colour–shape classes, a target
  task of other combinations: sources sharing a colour or shape should help);
- ``synthetic-concepts``: the spec's small world with planted helpful source classes (MLPs, seconds);
- ``oracle-linear``: outputs f(t_j; S) = b_j + Σ_k W[k, j]·1[k ∈ S] + noise, for exact tests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from confidently.errors import InvalidInput, UsageError
from confidently.registry import Registry

VAL = ":val"  # suffix of a task's validation split: influences are ranked there, accuracy reported on test


@dataclass
class TaskResult:
    logits: torch.Tensor  # n×C on the task's test examples
    labels: torch.Tensor  # n


class Recipe:
    """A training pipeline for the farm: ``run(include, seed, device)`` → (source accuracy, {task: TaskResult}),
    training and predicting on ``device`` (a torch device), the results on the CPU."""

    kind: str = ""
    config: dict[str, Any]
    num_units: int
    unit_names: list[str]

    def run(self, include: list[int], seed: int, device: torch.device | str = "cpu"
            ) -> tuple[float | None, dict[str, TaskResult]]:
        raise NotImplementedError

    def checksum(self) -> str:
        return hashlib.sha256(json.dumps({"kind": self.kind, **self.config}, sort_keys=True,
                                         default=str).encode()).hexdigest()


RECIPES: Registry[Callable[[dict[str, Any]], Recipe]] = Registry("recipe kind")
register_recipe = RECIPES.register
list_recipes = RECIPES.names


def load_recipe(spec: str | dict[str, Any]) -> Recipe:
    """A built-in recipe by kind (``demo-shapes``, ``synthetic-concepts``, ``oracle-linear``) or a recipe file."""
    if isinstance(spec, dict):
        config = spec
    elif spec in RECIPES:
        config = {"kind": spec}
    else:
        path = Path(spec)
        if not path.exists():
            raise UsageError(f"`recipe` {spec!r}: not a file and not a built-in recipe ({', '.join(list_recipes())})")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                config = tomllib.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                import yaml

                config = yaml.safe_load(text)
            else:
                config = json.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"{path}: not a readable recipe ({exc})") from None
        config.setdefault("kind", "image")
        base = path.parent
        for section in [config.get("source", {}), *config.get("target", [])]:
            for key in ("data", "train", "test"):
                value = section.get(key)
                if isinstance(value, str) and not value.startswith("demo:") and not Path(value).is_absolute():
                    section[key] = str((base / value).resolve())
    return RECIPES.get(config.get("kind"))(config)


# ----------------------------------------------------------------------------- oracle-linear


@register_recipe("oracle-linear")
class OracleLinear(Recipe):
    """f_i(t_j) = b_j + Σ_k W[k, j]·M_ik + N(0, σ²) as ``logit_correct`` (label 0, other logit 0): W is
    ``background``·N(0, 1) (default 0.05; 0 makes the truth sparse) with row ``helper`` set to +1 and row
    ``harmful`` to −1; ``noise`` is σ."""

    kind = "oracle-linear"

    def __init__(self, config: dict[str, Any]):
        self.config = {"units": 20, "targets": 30, "noise": 0.1, "world_seed": 0, "helper": 3, "harmful": 7,
                       **{k: v for k, v in config.items() if k != "kind"}}
        units, targets = self.config["units"], self.config["targets"]
        generator = torch.Generator().manual_seed(self.config["world_seed"])
        self.weights = self.config.get("background", 0.05) * torch.randn(units, targets, generator=generator)
        self.weights[self.config["helper"]] = 1.0
        self.weights[self.config["harmful"]] = -1.0
        self.bias = torch.randn(targets, generator=generator)
        self.num_units, self.unit_names = units, [str(k) for k in range(units)]

    def run(self, include: list[int], seed: int, device: torch.device | str = "cpu"
            ) -> tuple[float | None, dict[str, TaskResult]]:
        mask = torch.zeros(self.num_units, device=device)
        mask[include] = 1
        generator = torch.Generator().manual_seed(seed)
        noise = self.config["noise"] * torch.randn(self.config["targets"], generator=generator)
        values = self.bias + (mask @ self.weights.to(device)).cpu() + noise
        logits = torch.stack([values, torch.zeros_like(values)], dim=1)
        return None, {"oracle": TaskResult(logits, torch.zeros(len(values), dtype=torch.long))}


# ----------------------------------------------------------------------------- synthetic-concepts


class _Bottleneck(nn.Module):
    def __init__(self, dim: int, width: int, bottleneck: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, bottleneck), nn.ReLU())
        self.head = nn.Linear(bottleneck, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int,
         generator: torch.Generator, params=None) -> None:
    optimizer = torch.optim.Adam(params if params is not None else model.parameters(), lr=lr)
    for _ in range(steps):
        index = torch.randint(0, len(x), (min(batch, len(x)),), generator=generator)
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@register_recipe("synthetic-concepts")
class SyntheticConcepts(Recipe):
    """16 concepts in R^32. Source classes 0–3 carry the concepts the target needs (0–3), classes 4–18
    two nuisance concepts, class 19 mixes 0 and 1; target class j = concept j + a nuisance concept.
    A bottleneck MLP (32→64→6) is pre-trained, then a linear probe is fitted on its frozen features."""

    kind = "synthetic-concepts"

    def __init__(self, config: dict[str, Any]):
        self.config = {"concepts": 16, "dim": 32, "per_class": 150, "target_train": 30, "target_test": 150,
                       "steps": 150, "lr": 1e-2, "batch": 256, "noise": 0.6, "world_seed": 0,
                       **{k: v for k, v in config.items() if k != "kind"}}
        c = self.config
        generator = torch.Generator().manual_seed(c["world_seed"])
        concepts = torch.linalg.qr(torch.randn(c["dim"], c["dim"], generator=generator)).Q[:, :c["concepts"]].T * 3
        recipes = [[k] for k in range(4)]
        nuisance = list(range(4, c["concepts"]))
        for k in range(15):
            recipes.append([nuisance[k % len(nuisance)], nuisance[(k * 5 + 3) % len(nuisance)]])
        recipes.append([0, 1])
        self.sources = []
        for members in recipes:
            weights = torch.rand(c["per_class"], len(members), generator=generator) + 0.5
            x = weights @ concepts[members] + c["noise"] * torch.randn(c["per_class"], c["dim"], generator=generator)
            self.sources.append(x)

        def target(count: int) -> tuple[torch.Tensor, torch.Tensor]:
            xs, ys = [], []
            for j in range(4):
                extra = torch.randint(4, c["concepts"], (count,), generator=generator)
                x = concepts[j] * (torch.rand(count, 1, generator=generator) + 0.5) + concepts[extra] * \
                    (torch.rand(count, 1, generator=generator) + 0.5)
                xs.append(x + c["noise"] * torch.randn(count, c["dim"], generator=generator))
                ys.append(torch.full((count,), j))
            return torch.cat(xs), torch.cat(ys)

        self.target_train, self.target_test = target(c["target_train"]), target(c["target_test"])
        self.target_val = target(c["target_test"])  # rank on this, report on test
        self.num_units, self.unit_names = len(recipes), [f"class-{k}" for k in range(len(recipes))]

    def run(self, include: list[int], seed: int, device: torch.device | str = "cpu"
            ) -> tuple[float | None, dict[str, TaskResult]]:
        c = self.config
        generator = torch.Generator().manual_seed(seed % 2**63)  # batches drawn on the CPU: the same on any device
        torch.manual_seed(seed % 2**63)
        x = torch.cat([self.sources[k] for k in include]).to(device)
        y = torch.cat([torch.full((len(self.sources[k]),), i) for i, k in enumerate(include)]).to(device)
        model = _Bottleneck(c["dim"], 64, 6, len(include)).to(device)
        _fit(model, x, y, c["steps"], c["lr"], c["batch"], generator)
        with torch.no_grad():
            source_acc = float((model(x).argmax(1) == y).float().mean())
        probe = nn.Linear(6, 4).to(device)
        body = model.body.requires_grad_(False)
        train_x, train_y = (t.to(device) for t in self.target_train)
        _fit(nn.Sequential(body, probe), train_x, train_y, c["steps"], c["lr"], c["batch"], generator,
             probe.parameters())
        with torch.no_grad():
            test, val = (probe(body(split[0].to(device))).cpu() for split in (self.target_test, self.target_val))
        return source_acc, {"concepts": TaskResult(test, self.target_test[1]),
                            "concepts" + VAL: TaskResult(val, self.target_val[1])}


# ----------------------------------------------------------------------------- image recipes


def _train_config(section: dict[str, Any], defaults: dict[str, Any]):
    from confidently.training import TrainConfig

    values = {**defaults, **{k: v for k, v in section.items() if k in TrainConfig.__dataclass_fields__}}
    return TrainConfig(**values)


def carve(dataset, fraction: float):
    """(train, validation) with round(fraction · n) records chosen by id; None when the fraction is 0."""
    from confidently.run.seeding import derive_seed

    if fraction <= 0:
        return dataset, None
    ranked = sorted(range(len(dataset)), key=lambda i: derive_seed(0, dataset.ids[i], "val"))
    chosen = set(ranked[:round(fraction * len(ranked))])
    return dataset.subset([i for i in range(len(dataset)) if i not in chosen]), dataset.subset(sorted(chosen))


def _chosen(dataset, classes):
    """The task's classes relabelled 0..k-1, or the dataset as it is."""
    return dataset.select_classes(classes) if classes is not None else dataset


@register_recipe("image")
class ImageRecipe(Recipe):
    """``[source]`` data/split/classes/arch + training keys; ``[[target]]`` name/train/test/classes/mode +
    training keys (TrainConfig names: epochs, lr, batch_size, optimizer, schedule, peak_epoch, ...).
    Units are the source classes (``source.classes``, default all), relabelled 0..K-1 in that order, or
    with ``source.granularity = "example"`` every source image."""

    kind = "image"

    def __init__(self, config: dict[str, Any]):
        from confidently.data import open_dataset

        self.config = config
        source = config.get("source") or {}
        targets = config.get("target") or []
        if "data" not in source or not targets:
            raise InvalidInput("an image recipe needs [source] data = ... and at least one [[target]]")
        dataset = open_dataset(source["data"], source.get("split"))  # records only: images stream per job
        classes = source.get("classes") or list(range(dataset.num_classes))
        self.source = dataset.select_classes(classes)
        self.size = source.get("img_size")
        self.granularity = source.get("granularity", "class")
        if self.granularity not in ("class", "example"):
            raise InvalidInput(f"source granularity {self.granularity!r}: choose class or example")
        names = dataset.classes or [str(k) for k in range(dataset.num_classes)]
        if self.granularity == "class":
            self.num_units, self.unit_names = len(classes), [names[k] for k in classes]
        else:  # every source image is a unit (leakage, misleading examples): needs many more models
            self.num_units, self.unit_names = len(self.source), list(self.source.ids)
        self.tasks = {}
        for task in targets:
            chosen = task.get("classes")
            train = _chosen(open_dataset(task["train"], task.get("train_split")), chosen)
            test = _chosen(open_dataset(task.get("test", task["train"]), task.get("test_split")), chosen)
            if "val" in task or "val_split" in task:
                val = _chosen(open_dataset(task.get("val", task["train"]), task.get("val_split")), chosen)
            else:
                train, val = carve(train, float(task.get("val_fraction", 0.1)))
            self.tasks[task.get("name", f"target{len(self.tasks)}")] = (task, train, test, val)

    @functools.cached_property
    def image_size(self) -> int:
        """The size models are built for: ``img_size``, else the first source image's shorter side (read
        once per recipe, not once per job)."""
        return self.size or self.source.image_size()

    def run(self, include: list[int], seed: int, device: torch.device | str = "cpu"
            ) -> tuple[float | None, dict[str, TaskResult]]:
        from confidently.data.loader import StreamLoader
        from confidently.data.preprocess import DataConfig, make_preprocess
        from confidently.evaluation import clean_accuracy
        from confidently.models import create_model
        from confidently.run.seeding import derive_seed
        from confidently.training import train_classifier
        from confidently.transfer import transfer

        source = self.config["source"]
        labels = self.source.labels.tolist()
        rows = [i for i, label in enumerate(labels) if label in set(include)] if self.granularity == "class" \
            else list(include)
        present = sorted({labels[i] for i in rows})
        subset = self.source.subset(rows).select_classes(present)
        torch.manual_seed(derive_seed(seed, "source") % 2**63)
        model = create_model(source.get("arch", "small_cnn"), len(present),
                             in_chans=subset.channels or subset.raw(0).shape[0], img_size=self.image_size)
        config = replace(_train_config(source, {"epochs": 10, "lr": 0.05, "optimizer": "sgd", "schedule": "cyclic",
                                                "peak_epoch": 2, "weight_decay": 5e-4}), seed=seed % 2**31)
        train_classifier(model, subset, config, device=device)

        def batches(dataset):
            return StreamLoader(dataset, make_preprocess("eval", DataConfig.of(model)), batch_size=256, device=device)

        source_acc = clean_accuracy(model, batches(subset), len(present))
        out = {}
        for name, (task, train, test, val) in self.tasks.items():
            torch.manual_seed(derive_seed(seed, "head", name) % 2**63)
            target_config = replace(_train_config(task, {"epochs": 10, "lr": 0.05, "optimizer": "sgd",
                                                         "schedule": "cyclic", "peak_epoch": 2,
                                                         "weight_decay": 5e-4}), seed=seed % 2**31)
            tuned = transfer(model, train, target_config, mode=task.get("mode", "fixed"),
                             num_classes=int(train.labels.max()) + 1, device=device)
            tuned.eval()
            for key, split in ((name, test), (name + VAL, val)):
                if split is not None and len(split):
                    logits, targets = [], []
                    with torch.no_grad():
                        for batch in batches(split):
                            logits.append(tuned(batch.images).cpu())
                            targets.append(batch.labels.cpu())
                    out[key] = TaskResult(torch.cat(logits), torch.cat(targets))
        return source_acc, out


@register_recipe("demo-shapes")
def demo_shapes(config: dict[str, Any]) -> Recipe:
    """12 colour–shape source classes and a 4-class target of other combinations, 16×16, small CNN."""
    spec = "demo:shapes?classes=16&size=16&per_class=60"
    recipe = ImageRecipe({
        "source": {"data": spec, "split": "train", "classes": list(range(12)), "arch": "small_cnn", "epochs": 8,
                   "batch_size": 64, **config.get("source", {})},
        "target": [{"name": "shapes4", "train": spec, "train_split": "train", "test_split": "test",
                    "classes": [12, 13, 14, 15], "mode": "fixed", "epochs": 8, "batch_size": 32,
                    "val_fraction": 0.25}],
    })
    recipe.kind = "demo-shapes"
    recipe.config = {"kind": "demo-shapes", **recipe.config}
    return recipe
