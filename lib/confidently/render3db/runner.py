"""Rendering and judging jobs: one :class:`RenderWorker` per worker keeps its renderer and model loaded.

A worker takes chunks of jobs of one (environment, object) pair, loads the pair only when it changes,
and per job: builds a fresh SceneState, applies the pre-render controls in config order, renders
(seeded), applies the post-render controls, quantises to 8 bits (what a PNG or shard would hold, so
anyone can re-evaluate the stored image and get the record's answer), then runs the model on that
image alone (batch of one: results never depend on chunking, sharding or engine) and the evaluator.
:func:`run_jobs` sends chunks through a run engine (serial, or Ray actors) and yields results in job order;
:func:`planned_jobs` says which jobs a run (a limit, a shard, a resumed run) renders, :func:`run_engine`
which engine runs them, and :class:`Accuracy` tallies the judged renders.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from confidently.errors import UsageError
from confidently.render.scene import SceneState
from confidently.render3db.config import Experiment
from confidently.render3db.evaluators import make_evaluator
from confidently.render3db.jobs import Job, count_jobs, iter_jobs
from confidently.run.engines import create_engine
from confidently.run.seeding import record_generator
from confidently.run.shard import Shard

EXTRA_OUTPUTS = ("segmentation", "uv", "depth")


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs, picklable: the experiment, the model file, where to run it (``device``, resolved
    in the worker: ``auto`` finds the GPU a Ray worker was given), what to keep."""

    experiment: Experiment
    model: str | None = None
    device: str = "cpu"
    evaluate: bool = True
    keep_images: bool = False


def quantise(rgb: torch.Tensor) -> torch.Tensor:
    """Float C×H×W in [0, 1] → uint8, as stored."""
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8)


def model_input(rgb_uint8: torch.Tensor, input_size: tuple[int, int, int]) -> torch.Tensor:
    """A stored render (uint8 3×H×W) as the model's 1×C×h×w float input: bilinear resize, channels matched."""
    from confidently.io.images import to_channels

    x = rgb_uint8.float().div(255.0)
    x = to_channels(x, input_size[0]).unsqueeze(0)
    if tuple(x.shape[-2:]) != tuple(input_size[1:]):
        x = F.interpolate(x, size=tuple(input_size[1:]), mode="bilinear", align_corners=False, antialias=True)
    return x


class RenderWorker:
    """Renders and judges chunks of jobs; built once per worker (``engine.map_stateful``)."""

    def __init__(self, settings: WorkerSettings):
        from confidently.render.engines import engine_class
        from confidently.run.device import resolve_device

        self.settings = settings
        experiment = settings.experiment
        self.experiment = experiment
        self.device = resolve_device(settings.device)
        cls = engine_class(experiment.renderer)
        try:
            self.engine = cls(device=str(self.device))
        except TypeError:  # an engine without a device option
            self.engine = cls()
        self.objects = {o.id: o for o in experiment.objects}
        self.environments = {e.id: e for e in experiment.environments}
        self.controls = [(setup.instantiate(experiment.root), setup) for setup in experiment.controls]
        self.loaded: tuple[str, str] | None = None
        self.model = None
        self.evaluator = None
        if settings.evaluate:
            self.model = load_inference_model(settings).to(self.device).eval()
            self.evaluator = make_evaluator(experiment.evaluation)
        self.render_args = experiment.render
        if "segmentation" in getattr(self.evaluator, "needs", ()):  # the detection evaluator's ground truth
            self.render_args = replace(experiment.render, with_segmentation=True)

    def _load(self, job: Job) -> None:
        if self.loaded != (job.environment, job.object):
            self.engine.load(self.objects[job.object], self.environments[job.environment], self.render_args)
            self.loaded = (job.environment, job.object)

    def render(self, job: Job) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The job's outputs (``rgb`` uint8 and any extra passes) and its timings."""
        self._load(job)
        start = time.perf_counter()
        obj = self.objects[job.object]
        context = {"label": obj.label, "object": obj, "environment": self.environments[job.environment],
                   "job": job.id}
        state = SceneState()
        for control, setup in self.controls:
            if setup.cls.kind == "pre":
                control.apply(state, _own(job.args, setup.name), context)
        out = self.engine.render(state, job.seed)
        rendered = time.perf_counter()
        rgb, alpha = out["rgb"].float(), out["alpha"].float()
        for control, setup in self.controls:
            if setup.cls.kind == "post":
                generator = record_generator(job.seed, job.id, setup.name)
                rgb = control.process(rgb, alpha, _own(job.args, setup.name), generator).clamp(0, 1)
        outputs = {"rgb": quantise(rgb)}
        for name in EXTRA_OUTPUTS:
            if name in out:
                outputs[name] = out[name]
        return outputs, {"render": rendered - start, "post": time.perf_counter() - rendered}

    def judge(self, outputs: dict[str, torch.Tensor], job: Job) -> dict[str, Any]:
        labels = job.label if isinstance(job.label, list) else [job.label]
        x = model_input(outputs["rgb"], self.model.input_size).to(self.device)
        with torch.inference_mode():
            output = self.model(x)
        if getattr(self.evaluator, "output_type", None) == "bboxes":  # a torchvision detector: a dict per image
            found = {key: value.cpu() for key, value in output[0].items()}
            return self.evaluator.evaluate_boxes(found, outputs["segmentation"], tuple(x.shape[-2:]))
        return self.evaluator.evaluate(output.float().cpu(), labels)

    def __call__(self, chunk: list[Job]) -> list[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
        results = []
        for job in chunk:
            outputs, timing = self.render(job)
            fields: dict[str, Any] = {}
            if self.model is not None:
                start = time.perf_counter()
                fields = self.judge(outputs, job)
                timing["infer"] = time.perf_counter() - start
            fields["renderer"] = self.engine.describe()
            fields["timing_s"] = {k: round(v, 6) for k, v in timing.items()}
            results.append((fields, outputs if self.settings.keep_images else {}))
        return results


def _own(args: dict[str, Any], control: str) -> dict[str, Any]:
    prefix = control + "."
    return {k[len(prefix):]: v for k, v in args.items() if k.startswith(prefix)}


def chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    """Consecutive jobs of one pair, at most ``size`` per chunk (a worker keeps its scene across a chunk)."""
    chunk: list[Job] = []
    for job in jobs:
        if chunk and (len(chunk) == size or chunk[-1].pair != job.pair):
            yield chunk
            chunk = []
        chunk.append(job)
    if chunk:
        yield chunk


def run_jobs(settings: WorkerSettings, jobs: Iterable[Job], engine: Any, *, workers: int | None = None,
             chunk_size: int = 8) -> Iterator[tuple[Job, dict[str, Any], dict[str, torch.Tensor]]]:
    """(job, result fields, tensors) for every job, in job order, through a run engine's stateful workers."""
    pending: list[list[Job]] = []

    def tracked() -> Iterator[list[Job]]:
        for chunk in chunks(jobs, chunk_size):
            pending.append(chunk)
            yield chunk

    factory = functools.partial(RenderWorker, settings)
    for results in engine.map_stateful(factory, tracked(), workers=workers):
        chunk = pending.pop(0)
        for job, (fields, tensors) in zip(chunk, results, strict=True):
            yield job, fields, tensors


def load_inference_model(settings: WorkerSettings) -> torch.nn.Module:
    """The model a run judges with, on the CPU: a model file, or the torchvision/timm network 3DB's
    ``inference.module``/``class``/``args`` name (pretrained weights only from the local hub cache)."""
    from confidently.models import load_model

    if settings.model:
        return load_model(settings.model, "cpu")
    from confidently.render3db.inference import threedb_model

    return threedb_model(settings.experiment.inference, settings.experiment.label_names)


def check_model(settings: WorkerSettings) -> WorkerSettings:
    """Load the model once here to refuse a bad model or labels it cannot predict before workers start."""
    if not settings.evaluate:
        return settings
    if not settings.model and settings.experiment.inference.get("class") is None:
        raise UsageError("no model: give --model FILE, inference.model, or 3DB's inference.module/class/args in the "
                         "experiment (or --no-eval)")
    model = load_inference_model(settings)
    evaluator = make_evaluator(settings.experiment.evaluation)
    labels = [lab for o in settings.experiment.objects for lab in (o.label if isinstance(o.label, list) else [o.label])]
    if hasattr(evaluator, "check"):
        evaluator.check(model.num_classes, labels)
    resolution = settings.experiment.inference.get("resolution")
    if resolution is not None:
        size = resolution if isinstance(resolution, int) else resolution[0]
        if size != model.input_size[-1]:
            raise UsageError(f"inference.resolution {resolution} but the model takes {model.input_size[-1]}×"
                             f"{model.input_size[-2]} inputs (renders are resized to the model's input size)")
    norm = settings.experiment.inference.get("normalization")
    if norm is not None:
        mean, std = tuple(norm.get("mean", ())), tuple(norm.get("std", ()))
        if any(abs(a - b) > 1e-6 for a, b in zip(mean + std, model.mean + model.std, strict=False)) or \
                len(mean) != len(model.mean) or len(std) != len(model.std):
            raise UsageError(f"inference.normalization {norm} differs from the model's own (mean {list(model.mean)}, "
                             f"std {list(model.std)}); normalisation lives inside the model file")
    return replace(settings, model=str(settings.model) if settings.model else None)


def planned_jobs(experiment: Experiment, seed: int, *, limit: int | None = None, shard: Shard | None = None,
                 skip: set[str] | frozenset[str] = frozenset()) -> tuple[Iterator[Job], int]:
    """The jobs this run renders, lazily, and how many: the experiment's plan, its first ``limit``, this
    ``shard``'s part, less the ids in ``skip`` (renders an earlier, interrupted run already wrote)."""
    jobs: Iterator[Job] = iter_jobs(experiment, seed)
    total = count_jobs(experiment)
    if limit is not None:
        jobs, total = itertools.islice(jobs, limit), min(total, limit)
    if shard is not None and shard.count > 1:
        jobs, total = shard.select(jobs), len(range(shard.index, total, shard.count))
    if skip:
        jobs, total = (job for job in jobs if job.id not in skip), max(0, total - len(skip))
    return jobs, total


def run_engine(experiment: Experiment, engine: str, address: str | None, engine_given: bool,
               gpus_per_worker: float = 0.0) -> Any:
    """The run engine: the one asked for, else the config's ``executor`` (3DB's ``kind: ray``, its address);
    Ray actors get one CPU per render thread (their share, to which they pin their threads) and
    ``gpus_per_worker`` GPUs."""
    kind = experiment.executor.get("kind")
    if kind not in (None, "local", "ray"):
        raise UsageError(f"executor.kind {kind!r}: choose local or ray")
    if not engine_given and kind == "ray":
        engine, address = "ray", address or experiment.executor.get("address")
    options: dict[str, Any] = {"address": address}
    if engine == "ray":
        options.update(num_cpus=experiment.render.threads, num_gpus=gpus_per_worker)
    return create_engine(engine, **options)


class Accuracy:
    """Overall and per-object accuracy of judged renders, as records stream past."""

    def __init__(self):
        self.n = self.correct = 0
        self.objects: dict[str, list[int]] = {}  # object → [correct, n]

    def add(self, record: dict[str, Any]) -> None:
        if "is_correct" not in record:
            return
        self.n += 1
        self.correct += int(record["is_correct"])
        per = self.objects.setdefault(record["object"], [0, 0])
        per[0] += int(record["is_correct"])
        per[1] += 1

    def summary(self) -> dict[str, Any]:
        """``accuracy`` and ``per_object`` ({n, acc}); empty when nothing was judged."""
        if not self.n:
            return {}
        return {"accuracy": self.correct / self.n,
                "per_object": {name: {"n": n, "acc": hit / n} for name, (hit, n) in self.objects.items()}}
