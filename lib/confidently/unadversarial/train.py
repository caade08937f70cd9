"""Optimising unadversarial patches for a fixed model, and measuring them (thesis §3.2, App. C.2).

Everything here reads data as a stream of :class:`~confidently.data.loader.Batch` es (from a
:class:`~confidently.data.loader.StreamLoader`), so memory is that of a batch and a few images per
class, never the dataset: training draws its steps from successive shuffled epochs, evaluation
counts per batch, and the image baselines keep one image per class while they stream.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from confidently.data.corruptions import SEVERITIES, corrupt, list_corruptions
from confidently.data.dataset import ImageDataset
from confidently.data.loader import Batch, StreamLoader
from confidently.data.preprocess import DataConfig, make_preprocess
from confidently.errors import InvalidInput, UsageError
from confidently.models.classifier import Classifier
from confidently.run.console import progress
from confidently.run.seeding import derive_seed, record_generator, record_seeds
from confidently.unadversarial.limits import MAX_BACKGROUNDS
from confidently.unadversarial.patches import Placement, composite


@dataclass(frozen=True)
class PatchConfig:
    """The optimisation budget and, optionally, corruptions applied in the loop after compositing
    (``corruptions``: each sample gets one drawn uniformly, at a severity drawn from ``severities``,
    with probability ``corruption_prob``; default none, as in the thesis). ``batch_size`` is the
    loader's (see :func:`training_batches`)."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "sign"
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = SEVERITIES
    corruption_prob: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("sign", "adam"):
            raise UsageError(f"--optimizer {self.optimizer!r}: choose sign (the reference code) or adam")
        unknown = [c for c in self.corruptions if c not in list_corruptions()]
        if unknown:
            raise UsageError(f"--train-corruptions {','.join(unknown)}: choose from {', '.join(list_corruptions())}")
        if self.corruptions and (not self.severities or any(s not in SEVERITIES for s in self.severities)):
            raise UsageError(f"--train-severities {list(self.severities)}: choose among 1..5")
        if not 0 <= self.corruption_prob <= 1:
            raise UsageError(f"--train-corruption-prob {self.corruption_prob}: expected a probability in [0, 1]")


def corrupt_with_gradient(images: torch.Tensor, name: str, severity: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """``corrupt`` that lets gradients through: exactly for corruptions written in torch (gaussian noise
    and blur, contrast, brightness, fog), straight through (∂out/∂x := I) for those run by the
    ``imagecorruptions`` reference in NumPy: ``out = x + stopgrad(corrupt(x) − x)``. A quantising
    corruption written with ``torch.round`` should detach its output so that it gets the straight-through
    gradient too."""
    out = corrupt(images, name, severity, generator)
    if images.requires_grad and out.grad_fn is None:
        out = images + (out - images).detach()
    return out


def random_corruptions(images: torch.Tensor, names: Sequence[str], severities: Sequence[int],
                       generator: torch.Generator, prob: float = 1.0) -> torch.Tensor:
    """One corruption and severity per image, drawn from ``generator`` (each image corrupted with
    probability ``prob``); differentiable in ``images`` (see :func:`corrupt_with_gradient`)."""
    if not names:
        return images
    count = len(images)
    chosen = torch.rand(count, generator=generator) < prob
    which = torch.randint(0, len(names), (count,), generator=generator)
    level = torch.randint(0, len(severities), (count,), generator=generator)
    out = images.clone()
    for n, name in enumerate(names):
        for s, severity in enumerate(severities):
            rows = torch.nonzero(chosen & (which == n) & (level == s)).flatten()
            if len(rows):
                out[rows.to(images.device)] = corrupt_with_gradient(images[rows.to(images.device)], name,
                                                                    severity, generator)
    return out


def model_device(model: Classifier) -> torch.device:
    return model.normalize.mean.device


def check_labels(dataset: ImageDataset, num_classes: int, source: str | None = None) -> None:
    """Every record labelled, and within the model's classes (read from the records: nothing is decoded)."""
    source = source or dataset.name
    labels = dataset.labels
    if bool((labels < 0).any()):
        raise InvalidInput(f"{source}: every row needs a label", field="label")
    if len(labels) and int(labels.max()) >= num_classes:
        raise InvalidInput(f"{source} has labels up to {int(labels.max())}; the model has {num_classes} classes")


def eval_batches(dataset: ImageDataset, model: Classifier, batch_size: int, *, workers: int | None = None,
                 device: torch.device | str | None = None, describe: str | None = None) -> StreamLoader:
    """``dataset`` in order through the model's eval preprocessing (shorter side resized, centre crop to its
    input size: images of any size), as batches on the model's device (``describe``: with a progress bar)."""
    return StreamLoader(dataset, make_preprocess("eval", DataConfig.of(model)), batch_size=max(1, batch_size),
                        device=model_device(model) if device is None else device, workers=workers,
                        describe=describe)


def training_batches(dataset: ImageDataset, model: Classifier, config: PatchConfig, seed: int, *,
                     workers: int | None = None, device: torch.device | str | None = None) -> StreamLoader:
    """The loader :func:`train_patches` draws from: ``dataset`` through the model's eval preprocessing,
    shuffled by (``seed``, epoch), ``config.batch_size`` images a batch (at most the dataset)."""
    if not len(dataset):
        raise InvalidInput(f"{dataset.name} has no images to optimise patches on")
    return StreamLoader(dataset, make_preprocess("eval", DataConfig.of(model)),
                        batch_size=max(1, min(config.batch_size, len(dataset))),
                        device=model_device(model) if device is None else device, workers=workers, seed=seed,
                        shuffle=True)


def _checked_labels(batch: Batch, num_classes: int) -> torch.Tensor:
    labels = batch.labels
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = next(r for r, y in zip(batch.records, labels.tolist(), strict=True) if not 0 <= y < num_classes)
        raise InvalidInput(f"label {bad.get('label')!r} is not one of the {num_classes} classes",
                           field="label", record_id=str(bad.get("id")))
    return labels


def train_patches(model: Classifier, loader: StreamLoader, patches: torch.Tensor, placement: Placement,
                  config: PatchConfig, generator: torch.Generator,
                  on_step: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Minimise the model's loss on patched images over random placements; the model never changes.

    ``loader`` (a shuffled :class:`StreamLoader`, e.g. :func:`training_batches`) gives one batch per step,
    from ``loader.epoch(0)``, then ``epoch(1)``, ... until ``config.steps`` batches are done. Placements and
    in-loop corruptions come from ``generator``. ``sign`` steps P ← clip(P − lr·sign(∇P), 0, 1): a class
    absent from a batch has zero gradient and keeps its patch bit-identical (``adam`` zeroes its gradient
    so momentum cannot move it). Returns the patches and the loss per step.
    """
    device = model_device(model)
    model.eval().requires_grad_(False)
    patches = patches.clone().to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([patches], lr=config.lr) if config.optimizer == "adam" else None
    losses: list[float] = []
    started = time.perf_counter()
    steps = progress(range(1, config.steps + 1), config.steps, "patch steps")
    for step, (epoch, batch) in zip(steps, _batches_forever(loader), strict=False):
        y = _checked_labels(batch, len(patches)).to(device)
        x = composite(batch.images.to(device), patches[y], placement.sample(len(y), generator))
        x = random_corruptions(x, config.corruptions, config.severities, generator, config.corruption_prob)
        loss = F.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, patches)
        with torch.no_grad():
            if optimizer is None:
                patches -= config.lr * grad.sign()
            else:
                present = torch.zeros(len(patches), dtype=torch.bool, device=device)
                present[y] = True
                grad[~present] = 0  # absent classes must not drift under momentum
                patches.grad = grad
                optimizer.step()
            patches.clamp_(0, 1)
        losses.append(float(loss.detach()))
        if on_step is not None and step % max(1, config.steps // 10) == 0:
            on_step({"step": step, "loss": sum(losses[-10:]) / len(losses[-10:]), "epoch": epoch,
                     "seconds": time.perf_counter() - started})
    return patches.detach().cpu(), losses


def _batches_forever(loader: StreamLoader) -> Iterator[tuple[int, Batch]]:
    """(epoch, batch) from ``loader.epoch(0)``, then ``epoch(1)``, ... for as long as they are asked for."""
    epoch = 0
    while True:
        drawn = 0
        for batch in loader.epoch(epoch):
            drawn += 1
            yield epoch, batch
        if not drawn:
            raise InvalidInput("the training data gave no batch (no image loaded)")
        epoch += 1


def conflict_classes(labels: torch.Tensor, ids: Sequence[str], num_classes: int, seed: int) -> torch.Tensor:
    """For each image a class other than its own, uniformly and seeded by (seed, its record id): whose patch
    it carries in the conflict test (thesis Fig. 3.5)."""
    if num_classes < 2:
        raise UsageError("the conflict test needs at least two classes")
    shifts = torch.cat([torch.randint(1, num_classes, (1,), generator=record_generator(seed, i, "conflict"))
                        for i in ids]) if len(ids) else torch.zeros(0, dtype=torch.long)
    return (labels.cpu() + shifts) % num_classes


def record_placements(placement: Placement, ids: Sequence[str], seed: int) -> torch.Tensor:
    """Each image's placement (N×4) from (seed, its record id), as ``unadv-patch apply`` draws it."""
    if not len(ids):
        return placement.sample(0, torch.Generator())
    return torch.cat([placement.sample(1, record_generator(seed, i, "placement")) for i in ids])


def evaluate_arms(model: Classifier, batches: Iterable[Batch], arms: dict[str, torch.Tensor | None],
                  placement: Placement, corruptions: Sequence[str], severities: Sequence[int], seed: int, *,
                  warps: Mapping[str, str] | None = None,
                  conflict: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Accuracy per (arm, corruption, severity) over one pass of a stream of batches (counts add up per
    batch; memory is one batch). Every arm sees the same placements and the same noise. Each image's
    corruption noise, placement (and conflict class) is seeded by (seed, its record id), so none depends on
    the batch size, the workers or the order a stream comes in. Corruptions act on the already
    patched image. Arm ``None`` = no patch; ``warps`` names an arm's resampling (``nearest`` for QR codes;
    default ``bilinear``).

    ``conflict`` (the unadversarial patches, usually) adds rows with arm ``conflict``: each image carries
    the patch of a random *other* class (:func:`conflict_classes`), at the same placements; the row
    reports the fractions predicted as the image's class (``pred_image_frac``, also its ``acc``) and as
    the patch's class (``pred_patch_frac``).
    """
    device = model_device(model)
    shown: dict[str, torch.Tensor | None] = dict(arms)
    if conflict is not None:
        if "conflict" in arms:
            raise UsageError("an arm is already called 'conflict'; rename that patch file")
        if len(conflict) < 2:
            raise UsageError("the conflict test needs at least two classes")
        shown["conflict"] = conflict
    rows = [("clean", 0)] + [(name, s) for name in corruptions for s in severities]
    classes_pasted = min((len(p) for p in shown.values() if p is not None), default=None)
    total = 0
    correct = {(arm, c, s): 0 for arm in shown for c, s in rows}
    as_patch = {(c, s): 0 for c, s in rows}
    on_device: dict[tuple[str, torch.device], torch.Tensor] = {}
    model.eval()
    for batch in batches:
        images, labels = batch.images, batch.labels.cpu()
        if classes_pasted is not None:
            _checked_labels(batch, classes_pasted)
        spots = record_placements(placement, batch.ids, seed)
        pasted = conflict_classes(labels, batch.ids, len(conflict), seed) if conflict is not None else None
        total += len(labels)
        for arm, patches in shown.items():
            x = images
            if patches is not None:
                key = (arm, images.device)
                if key not in on_device:
                    on_device[key] = patches.to(images.device, images.dtype)
                classes = pasted if arm == "conflict" else labels
                x = composite(images, on_device[key][classes.to(images.device)], spots,
                              (warps or {}).get(arm, "bilinear"))
            for corruption, severity in rows:
                seen = x if corruption == "clean" else \
                    corrupt(x, corruption, severity, seeds=record_seeds(seed, batch.ids, "corrupt", corruption))
                with torch.no_grad():
                    predicted = model(seen.to(device)).argmax(1).cpu()
                correct[arm, corruption, severity] += int((predicted == labels).sum())
                if arm == "conflict":
                    as_patch[corruption, severity] += int((predicted == pasted).sum())
    out = []
    for arm in shown:
        for corruption, severity in rows:
            hits = correct[arm, corruption, severity]
            row = {"arm": arm, "corruption": corruption, "severity": severity, "n": total, "correct": hits,
                   "acc": hits / total if total else None}
            if arm == "conflict":
                row["pred_image_frac"] = row["acc"]
                row["pred_patch_frac"] = (float(torch.tensor(float(as_patch[corruption, severity])) / total)
                                          if total else None)  # a float32 fraction, as it has always been
            out.append(row)
    return out


def to_patches(images: torch.Tensor, side: int) -> torch.Tensor:
    """Images (K×C×H×W) as p×p patches: area-resampled, in [0, 1]."""
    return F.interpolate(images.float(), size=(side, side), mode="area").clamp(0, 1)


def best_images(model: Classifier, batches: Iterable[Batch], num_classes: int, side: int) -> torch.Tensor:
    """Per class, the image the model finds easiest (lowest loss: the highest confidence in its own class;
    the first such in stream order), resized to p×p (the thesis's baseline). Streams: only each class's
    best so far is kept (on the CPU)."""
    device = model_device(model)
    model.eval()
    lowest = torch.full((num_classes,), math.inf)
    best: list[torch.Tensor | None] = [None] * num_classes
    with torch.no_grad():
        for batch in batches:
            labels = _checked_labels(batch, num_classes).cpu()
            losses = F.cross_entropy(model(batch.images.to(device)), labels.to(device), reduction="none").cpu()
            for c in labels.unique().tolist():
                rows = torch.nonzero(labels == c).flatten()
                row = int(rows[losses[rows].argmin()])
                if losses[row] < lowest[c]:
                    lowest[c], best[c] = losses[row], batch.images[row].detach().cpu().clone()
    return to_patches(torch.stack(_every_class(best, "best-image")), side)


def _every_class(images: list[torch.Tensor | None], kind: str) -> list[torch.Tensor]:
    missing = [c for c, image in enumerate(images) if image is None]
    if missing:
        raise UsageError(f"class {missing[0]} has no image to take a {kind} patch from")
    return images  # type: ignore[return-value]


def seeded_sample(ids: Sequence[str], count: int, seed: int, *keys: object) -> list[int]:
    """Positions of the ``count`` records with the smallest ``derive_seed(seed, id, *keys)``, in dataset order:
    a seeded sample chosen from the ids alone (no image is read), the same whatever the order or batching."""
    chosen = heapq.nsmallest(count, range(len(ids)), key=lambda i: derive_seed(seed, ids[i], *keys))
    return sorted(chosen)


RANDOM_IMAGE_KEY = "random-image"


def random_image_picks(ids: Sequence[str], labels: Sequence[int] | torch.Tensor, num_classes: int,
                       seed: int) -> list[int]:
    """Per class (in class order) the position of the record whose ``derive_seed(seed, id, "random-image")`` is
    smallest: a seeded uniform choice made from ids and labels alone, so only the chosen images need decoding."""
    labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    keys: list[tuple[int, int] | None] = [None] * num_classes
    for position, (record_id, label) in enumerate(zip(ids, labels, strict=True)):
        if 0 <= label < num_classes:
            key = (derive_seed(seed, record_id, RANDOM_IMAGE_KEY), position)
            if keys[label] is None or key < keys[label]:
                keys[label] = key
    missing = [c for c, key in enumerate(keys) if key is None]
    if missing:
        raise InvalidInput(f"every class needs a training image for a random-image patch (class {missing[0]} has none)")
    return [key[1] for key in keys]  # type: ignore[index]


def random_images(batches: Iterable[Batch], num_classes: int, side: int, seed: int) -> torch.Tensor:
    """Per class the image of :func:`random_image_picks`' choice, resized to p×p, streaming (one image per class
    kept). Streaming only the picked records (``dataset.subset(random_image_picks(...))``) gives the same
    patches and decodes K images."""
    lowest: list[int | None] = [None] * num_classes
    chosen: list[torch.Tensor | None] = [None] * num_classes
    for batch in batches:
        labels = _checked_labels(batch, num_classes).tolist()
        for row, (record_id, label) in enumerate(zip(batch.ids, labels, strict=True)):
            key = derive_seed(seed, record_id, RANDOM_IMAGE_KEY)
            if lowest[label] is None or key < lowest[label]:
                lowest[label], chosen[label] = key, batch.images[row].detach().cpu().clone()
    return to_patches(torch.stack(_every_class(chosen, "random-image")), side)


def background_images(dataset: ImageDataset, model: Classifier, *, limit: int = MAX_BACKGROUNDS, seed: int = 0,
                      batch_size: int = 64, workers: int | None = None) -> torch.Tensor:
    """At most ``limit`` images of ``dataset`` for texture backgrounds (float N×C×H×W on the CPU, through the
    model's eval preprocessing): all of a small set, else a seeded sample (:func:`seeded_sample`, key
    ``background``) chosen from the ids, so only those ``limit`` images are decoded and held."""
    if not len(dataset):
        raise UsageError("--backgrounds: the image set is empty")
    if len(dataset) > limit:
        dataset = dataset.subset(seeded_sample(dataset.ids, limit, seed, "background"))
    return torch.cat([batch.images for batch in eval_batches(dataset, model, batch_size, workers=workers,
                                                                  device="cpu")])
