"""How similar are edit(immunized) and edit(clean)? Per-pair image metrics and set-level FID / PR (spec §2.7).

Lower similarity means better immunization. Images are float N×3×H×W in [0, 1]; every metric
uses piq with ``data_range=1.0``.

**Argument order.** Every function here takes the *reference* first (the edit of the clean photo)
and the image under test second (the edit of the immunized one). piq's convention is
``metric(x=prediction, y=target)``, so we call ``piq.<metric>(test, ref)``. Only VIFp is asymmetric:
in ``piq.vif_p`` the *second* argument ``y`` plays the reference (its gain is σ_xy/σ_y² and its
denominator uses σ_y²), so ``vifp(ref, test)`` is ``piq.vif_p(test, ref)`` — a contrast-enhanced
test image scores above 1, as in Sheikh & Bovik.

**Small images.** Some metrics need a minimum side length (VIFp 41 px, SR-SIM 40, DSS 32, HaarPSI
16, SSIM its 11-px window). With ``small="upsample"`` (default) a metric that does not fit is
computed on both images enlarged by the smallest integer factor k that fits, by nearest-neighbour
pixel repetition (each pixel becomes a k×k block: no new values, identical images stay identical),
and a note says so (e.g. ``"computed on 64×64 (×2 nearest upsampling; vifp needs ≥ 41 px)"``);
such values are fine for comparing methods on the same images but not with numbers measured at
full size. With ``small="skip"`` the metric is ``None`` and the note gives the reason.

**Batch independence.** ``piq.srsim`` normalises its saliency maps with the min/max over the whole
batch, so its value for one pair depends on the other pairs in the batch; SR-SIM is therefore
computed one pair at a time. Every other metric is computed batched.

**Set-level metrics.** FID and precision/recall (``pr`` = precision, ``pr_recall`` = recall,
k-NN manifolds with ``nearest_k=5``) compare the *sets* of reference and test edits through image
features. The default feature extractor is the FID InceptionV3, whose weights piq downloads at
run time; here they come only from a file the user supplies (:func:`inception_features`, the
pytorch-fid ``pt_inception-2015-12-05`` state dict). :func:`latent_features` turns any encoder
(e.g. the LDM's VAE) into a feature function: a non-comparable proxy. Without features the set
metrics are skipped with a reason; nothing here ever touches the network.

Metrics are registered by name (``PAIR_METRICS``, ``SET_METRICS``): a new one is one decorated function.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.transforms import Transform, apply_transform, parse_transforms, transform_field
from confidently.registry import Registry

__all__ = [
    "DEFAULT_METRICS", "PAIR_METRICS", "SET_METRICS", "FeatureFn", "PairMetric", "ScoreSummary", "SetMetric",
    "apply_transform", "extract_features", "frechet_distance", "inception_features", "latent_features",
    "list_metrics", "mean_std", "parse_metrics", "parse_transforms", "score_image_pairs", "score_pairs",
    "set_scores", "transform_field",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # N×3×H×W in [0, 1] → N×D
SMALL_POLICIES = ("upsample", "skip")


# --------------------------------------------------------------------------------------------------- registries


@dataclass(frozen=True)
class PairMetric:
    """A similarity between a reference image and a test image, per pair.

    ``compute(ref, test)`` takes N×3×H×W batches and returns N values. ``min_size`` is the smallest
    side (in pixels) piq accepts; ``per_image`` computes one pair at a time (batch-dependent in piq).
    """

    name: str
    title: str
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    min_size: int = 1
    higher_is_similar: bool = True
    per_image: bool = False


@dataclass(frozen=True)
class SetMetric:
    """A distance or overlap between the set of reference edits and the set of test edits (features N×D).

    ``compute(ref_features, test_features, nearest_k)`` returns ``{field: value}``; ``min_pairs`` is
    the fewest pairs for which it is defined.
    """

    name: str
    title: str
    compute: Callable[[torch.Tensor, torch.Tensor, int], dict[str, float]]
    fields: tuple[str, ...]
    min_pairs: Callable[[int], int]
    higher_is_similar: bool = True


PAIR_METRICS: Registry[PairMetric] = Registry("metric")
SET_METRICS: Registry[SetMetric] = Registry("metric")


def register_pair_metric(name: str, title: str, *, min_size: int = 1, higher_is_similar: bool = True,
                         per_image: bool = False):
    """Register ``fn(ref, test) -> N values`` as a per-pair metric."""

    def wrap(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        PAIR_METRICS.register(name)(PairMetric(name, title, fn, min_size, higher_is_similar, per_image))
        return fn

    return wrap


def register_set_metric(name: str, title: str, fields: tuple[str, ...], min_pairs: Callable[[int], int], *,
                        higher_is_similar: bool = True):
    """Register ``fn(ref_features, test_features, nearest_k) -> {field: value}`` as a set-level metric."""

    def wrap(fn: Callable[[torch.Tensor, torch.Tensor, int], dict[str, float]]):
        SET_METRICS.register(name)(SetMetric(name, title, fn, fields, min_pairs, higher_is_similar))
        return fn

    return wrap


def _piq():
    import piq  # imported lazily: piq imports torchvision, which `immunize encoder` does not need

    return piq


@register_pair_metric("ssim", "SSIM", min_size=11)
def _ssim(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().ssim(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("psnr", "PSNR (dB)")
def _psnr(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().psnr(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("vifp", "VIFp", min_size=41)
def _vifp(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().vif_p(test, ref, data_range=1.0, reduction="none")  # piq: y is the reference


@register_pair_metric("fsim", "FSIMc")
def _fsim(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().fsim(test, ref, data_range=1.0, reduction="none", chromatic=True)


@register_pair_metric("srsim", "SR-SIM", min_size=40, per_image=True)
def _srsim(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().srsim(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("gmsd", "GMSD", min_size=2, higher_is_similar=False)
def _gmsd(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().gmsd(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("vsi", "VSI", min_size=2)
def _vsi(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().vsi(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("dss", "DSS", min_size=32)
def _dss(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().dss(test, ref, data_range=1.0, reduction="none")


@register_pair_metric("haarpsi", "HaarPSI", min_size=16)
def _haarpsi(ref: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    return _piq().haarpsi(test, ref, data_range=1.0, reduction="none")


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to feature sets x (N₁×D) and y (N₂×D), as ``piq.FID``.

    ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), computed exactly in float64: tr √(Σ₁Σ₂) is the sum of the
    singular values of A₁A₂ᵀ / √((N₁−1)(N₂−1)) (A = centred features; an N₁×N₂ problem) when there are no
    more samples than dimensions, else the eigenvalues of Σ₁^½ Σ₂ Σ₁^½. piq instead iterates Newton–Schulz
    on the D×D product (≈ 25 s on one CPU core for D = 2048, and it prints to stdout when the product is
    singular, which it always is with fewer images than dimensions).
    """
    x, y = x.double(), y.double()
    n1, n2, dims = x.shape[0], y.shape[0], x.shape[1]
    mu1, mu2 = x.mean(0), y.mean(0)
    a, b = x - mu1, y - mu2
    traces = (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1)
    if min(n1, n2) <= dims:
        cross = torch.linalg.svdvals(a @ b.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    else:
        s1, s2 = a.T @ a / (n1 - 1), b.T @ b / (n2 - 1)
        values, vectors = torch.linalg.eigh(s1)
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        cross = torch.linalg.eigvalsh(root @ s2 @ root).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).dot(mu1 - mu2) + traces - 2 * cross)


@register_set_metric("fid", "FID", ("fid",), lambda k: 2, higher_is_similar=False)
def _fid(ref: torch.Tensor, test: torch.Tensor, nearest_k: int) -> dict[str, float]:
    return {"fid": max(0.0, frechet_distance(ref, test))}


@register_set_metric("pr", "precision / recall", ("pr", "pr_recall"), lambda k: k + 1)
def _pr(ref: torch.Tensor, test: torch.Tensor, nearest_k: int) -> dict[str, float]:
    precision, recall = _piq().PR(nearest_k=nearest_k)(ref.float(), test.float())  # ref = "real" manifold
    return {"pr": float(precision), "pr_recall": float(recall)}


METRIC_ORDER = ("ssim", "psnr", "vifp", "fsim", "srsim", "gmsd", "vsi", "dss", "haarpsi", "fid", "pr")
DEFAULT_METRICS = ",".join(METRIC_ORDER)


def list_metrics() -> list[str]:
    """Every metric name, in the thesis's order first (Table 4.1, then D.3), then any added later."""
    names = [*PAIR_METRICS, *SET_METRICS]
    return [*(n for n in METRIC_ORDER if n in names), *sorted(n for n in names if n not in METRIC_ORDER)]


def parse_metrics(text: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``"ssim,psnr,fid"`` (or ``all``) → (per-pair names, set-level names); unknown names are a UsageError."""
    if text is None or text == "all" or (not isinstance(text, str) and list(text) == ["all"]):
        items = list_metrics()
    else:
        items = [p.strip() for part in ([text] if isinstance(text, str) else text) for p in part.split(",")]
        items = [p for p in dict.fromkeys(items) if p]
    if not items:
        raise UsageError(f"--metrics is empty; choose from {', '.join(list_metrics())}")
    unknown = [p for p in items if p not in PAIR_METRICS and p not in SET_METRICS]
    if unknown:
        raise UsageError(f"unknown metric {', '.join(map(repr, unknown))}; choose from {', '.join(list_metrics())}")
    return [p for p in items if p in PAIR_METRICS], [p for p in items if p in SET_METRICS]


# ------------------------------------------------------------------------------------------ per-pair metrics


def _as_batch(images: torch.Tensor, what: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InvalidInput(f"{what}: expected N×3×H×W (or 3×H×W) images, got shape {list(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    images = images.float()
    if images.numel() and (float(images.min()) < -1e-5 or float(images.max()) > 1 + 1e-5):
        raise InvalidInput(f"{what}: pixel values outside [0, 1]")
    return images.clamp(0, 1)  # float round-off only


def _fit(images: torch.Tensor, factor: int) -> torch.Tensor:
    return images if factor == 1 else images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def score_pairs(ref: torch.Tensor, test: torch.Tensor, metrics: Iterable[str] | None = None, *,
                small: str = "upsample") -> tuple[dict[str, list[float | None]], dict[str, str]]:
    """Per-pair metrics between ``ref`` and ``test`` (same shape, N×3×H×W or 3×H×W, in [0, 1]).

    Returns ``({metric: [N values]}, {metric: note})``; a value is ``None`` when the metric was
    skipped (too small with ``small="skip"``) or piq returned a non-finite number, and the note says why.
    """
    if small not in SMALL_POLICIES:
        raise UsageError(f"small images: choose {' or '.join(SMALL_POLICIES)}, not {small!r}")
    names = list(metrics) if metrics is not None else [n for n in list_metrics() if n in PAIR_METRICS]
    ref, test = _as_batch(ref, "reference"), _as_batch(test, "test image")
    if ref.shape != test.shape:
        raise InvalidInput(f"the test image is {_size(test)} but the reference is {_size(ref)}; "
                           "metrics compare images of the same size")
    test = test.to(ref.device)
    count, (height, width) = ref.shape[0], ref.shape[-2:]
    values: dict[str, list[float | None]] = {}
    notes: dict[str, str] = {}
    for name in names:
        metric = PAIR_METRICS.get(name)
        factor = max(1, math.ceil(metric.min_size / min(height, width)))
        if factor > 1 and small == "skip":
            values[name] = [None] * count
            notes[name] = f"skipped: {name} needs ≥ {metric.min_size} px, the images are {height}×{width}"
            continue
        if factor > 1:
            notes[name] = (f"computed on {height * factor}×{width * factor} (×{factor} nearest upsampling; "
                           f"{name} needs ≥ {metric.min_size} px)")
        a, b = _fit(ref, factor), _fit(test, factor)
        with torch.no_grad():
            if metric.per_image:
                out = torch.cat([metric.compute(a[i:i + 1], b[i:i + 1]).reshape(1) for i in range(count)])
            else:
                out = metric.compute(a, b).reshape(count)
        row = [float(v) if math.isfinite(v) else None for v in out.double().cpu().tolist()]
        if any(v is None for v in row):
            notes[name] = f"piq returned a non-finite {name} for some pairs"
        values[name] = row
    return values, notes


def _size(images: torch.Tensor) -> str:
    return "×".join(str(s) for s in images.shape[-3:])


@dataclass
class PairScore:
    """The metrics of one (reference, test) pair and the notes on how they were computed."""

    values: dict[str, float | None]
    notes: dict[str, str] = field(default_factory=dict)


def score_image_pairs(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], metrics: Iterable[str], *,
                      small: str = "upsample", device: torch.device | str = "cpu",
                      batch_size: int = 16) -> list[PairScore]:
    """Score many (ref, test) pairs of C×H×W images, batching pairs of equal size; results in input order.

    Raises :class:`InvalidInput` for a pair whose images differ in size (check them first to report
    per record).
    """
    names = list(metrics)
    out: list[PairScore | None] = [None] * len(pairs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, (ref, test) in enumerate(pairs):
        if tuple(ref.shape[-2:]) != tuple(test.shape[-2:]):
            raise InvalidInput(f"the test image is {_size(test)} but the reference is {_size(ref)}; "
                               "metrics compare images of the same size")
        by_shape.setdefault(tuple(ref.shape), []).append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            ref = torch.stack([pairs[i][0] for i in chunk]).to(device)
            test = torch.stack([pairs[i][1] for i in chunk]).to(device)
            values, notes = score_pairs(ref, test, names, small=small)
            for j, i in enumerate(chunk):
                row = {name: values[name][j] for name in names}
                out[i] = PairScore(row, {k: v for k, v in notes.items()
                                         if row.get(k) is None or v.startswith("computed on")})
    return [score for score in out if score is not None]


# ------------------------------------------------------------------------------------------- features and sets


def extract_features(images: Sequence[torch.Tensor], features: FeatureFn, *, device: torch.device | str = "cpu",
                     batch_size: int = 16) -> torch.Tensor:
    """``features`` of C×H×W images (batched by size), as float32 N×D on the CPU, in input order."""
    rows: list[torch.Tensor | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    with torch.no_grad():
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                batch = _as_batch(torch.stack([images[i] for i in chunk]), "features input").to(device)
                out = features(batch).reshape(len(chunk), -1).float().cpu()
                for j, i in enumerate(chunk):
                    rows[i] = out[j]
    return torch.stack(rows) if rows else torch.zeros(0, 0)


FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def _fid_inception_architecture():
    """pytorch-fid's InceptionV3 (torchvision Inception3 with 1008 classes and the FID blocks), untrained."""
    from piq.feature_extractors import fid_inception as fi
    from torchvision import models

    net = models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fi.FIDInceptionE1(1280)
    net.Mixed_7c = fi.FIDInceptionE2(2048)
    return net


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InvalidInput(f"Inception weights file does not exist: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only: no code runs
    except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
        raise InvalidInput(f"{path}: not a readable state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise InvalidInput(f"{path}: expected a state dict (name → tensor), got {type(state).__name__}")
    return state


def inception_features(weights: str | os.PathLike, device: torch.device | str = "cpu") -> FeatureFn:
    """The FID InceptionV3 (2048-d pool features, inputs resized to 299) with weights read from a file.

    ``weights`` is the pytorch-fid state dict ``pt_inception-2015-12-05-6726825d.pth`` (a
    ``torch.save`` file, read with ``weights_only=True``) or the same tensors as ``.safetensors``.
    Nothing is downloaded.
    """
    from piq.feature_extractors import InceptionV3

    path = Path(weights)
    state = _load_state_dict(path)
    net = _fid_inception_architecture()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:3]
        raise InvalidInput(f"{path}: not the pytorch-fid InceptionV3 state dict ({FID_WEIGHTS_NAME}): "
                           f"{' '.join(s.strip() for s in first)[:300]}") from None

    class _FromFile(InceptionV3):
        @staticmethod
        def fid_inception_v3():
            return net

    model = _FromFile(output_blocks=[InceptionV3.DEFAULT_BLOCK_INDEX], resize_input=True, normalize_input=True)
    model = model.to(device).eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images.to(device))[0].flatten(1)

    return features


def latent_features(encode: Callable[[torch.Tensor], torch.Tensor], grid: int = 8) -> FeatureFn:
    """Features from an image encoder (e.g. ``lambda x: ldm.encode_mean(2 * x - 1)``): its latent map
    average-pooled to ``grid``×``grid`` and flattened (C·grid² dims, whatever the image size).

    A proxy for FID/PR when no Inception weights are at hand: comparable only within one run and
    one encoder, never with published FID numbers.
    """

    def features(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = encode(images)
        return F.adaptive_avg_pool2d(latents.float(), (grid, grid)).flatten(1)

    return features


@dataclass
class SetScores:
    values: dict[str, float | None]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def set_scores(ref_features: torch.Tensor, test_features: torch.Tensor, metrics: Iterable[str], *,
               nearest_k: int = 5) -> SetScores:
    """FID / PR between the reference set and the test set (features N×D, row i of both from pair i)."""
    out = SetScores({})
    count = int(ref_features.shape[0])
    if ref_features.shape != test_features.shape:
        raise InvalidInput(f"reference features {list(ref_features.shape)} and test features "
                           f"{list(test_features.shape)} differ in shape")
    dims = int(ref_features.shape[1]) if ref_features.ndim == 2 else 0
    for name in metrics:
        metric = SET_METRICS.get(name)
        need = metric.min_pairs(nearest_k)
        if count < need:
            for key in metric.fields:
                out.values[key] = None
            out.skipped[name] = f"needs ≥ {need} pairs" + (f" (nearest_k={nearest_k})" if name == "pr" else "") + \
                f", got {count}"
            continue
        out.values.update(metric.compute(ref_features, test_features, nearest_k))
        for key in metric.fields:
            if out.values[key] is not None and not math.isfinite(out.values[key]):
                out.values[key] = None
                out.notes[name] = f"{name} is not finite for these features"
        if name == "fid" and count <= dims and name not in out.notes:
            out.notes[name] = (f"{count} pairs ≤ {dims} feature dims: the covariances are rank-deficient, so FID "
                               "is biased upward; compare it only with runs of the same size")
    return out


# -------------------------------------------------------------------------------------------------- summaries


def mean_std(values: Iterable[float | None]) -> dict[str, float | int] | None:
    """``{"mean", "std", "n"}`` over the values that are not None (population std, ddof = 0); None if none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))
    return {"mean": mean, "std": std, "n": len(finite)}


def spread(values: Iterable[float | None]) -> dict[str, float | int] | None:
    """:func:`mean_std` plus the quartiles ``q1``, ``median``, ``q3`` (linear interpolation): the thesis's
    Fig. 4.6 shows the CLIP similarity's interquartile range."""
    stats = mean_std(values)
    if stats is None:
        return None
    ordered = sorted(float(v) for v in values if v is not None and math.isfinite(v))

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {**stats, "q1": quantile(0.25), "median": quantile(0.5), "q3": quantile(0.75)}


@dataclass
class _Cell:
    values: dict[str, list[float | None]]
    clip_ref: list[float] = field(default_factory=list)
    clip_test: list[float] = field(default_factory=list)
    ref_features: list[torch.Tensor] = field(default_factory=list)
    test_features: list[torch.Tensor] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    count: int = 0
    missing: int = 0


class ScoreSummary:
    """Collects per-record scores by group (``--group-by``) and variant (untransformed, or one transform)
    and turns them into ``immunize.summary`` records: mean ± std per per-pair metric, set-level metrics.

    ``features`` names the extractor of the features passed to :meth:`add` (``inception``, ``vae``),
    or is None with ``features_skipped`` saying why FID/PR cannot be computed. ``clip`` names the CLIP
    whose prompt–image similarities :meth:`add` receives (summarised as ``clip_ref`` and ``clip_test``:
    mean ± std and quartiles), or is None.
    """

    def __init__(self, pair_metrics: Sequence[str], set_metrics: Sequence[str] = (), *,
                 group_by: Sequence[str] = ("method",), ref_field: str = "edit_clean",
                 test_field: str = "edit_immunized", transforms: Sequence[str | Transform] = (),
                 features: str | None = None, features_skipped: str | None = None, nearest_k: int = 5,
                 clip: str | None = None):
        self.clip = clip
        self.pair_metrics, self.set_metrics = list(pair_metrics), list(set_metrics)
        self.group_by = list(group_by)
        self.ref_field, self.test_field = ref_field, test_field
        self.transforms = parse_transforms(list(map(str, transforms)))
        self.features, self.features_skipped, self.nearest_k = features, features_skipped, nearest_k
        self._cells: dict[tuple[Any, ...], dict[str | None, _Cell]] = {}

    def group_of(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_hashable(record.get(key)) for key in self.group_by)

    def _cell(self, group: tuple[Any, ...], variant: str | None) -> _Cell:
        variants = self._cells.setdefault(group, {})
        if variant not in variants:
            variants[variant] = _Cell({name: [] for name in self.pair_metrics})
        return variants[variant]

    def add(self, group: tuple[Any, ...], variant: str | None, values: dict[str, float | None], *,
            notes: dict[str, str] | None = None, ref_features: torch.Tensor | None = None,
            test_features: torch.Tensor | None = None,
            clip: tuple[float | None, float | None] | None = None) -> None:
        """One pair's scores; ``variant`` is None for the untransformed test image, else the transform spec;
        ``clip`` the (reference edit, test edit) prompt similarities."""
        cell = self._cell(group, variant)
        cell.count += 1
        if clip is not None:
            cell.clip_ref.append(clip[0])
            cell.clip_test.append(clip[1])
        for name in self.pair_metrics:
            cell.values[name].append(values.get(name))
        for key, note in (notes or {}).items():
            cell.notes.setdefault(key, note)
        if ref_features is not None and test_features is not None:
            cell.ref_features.append(ref_features.reshape(-1).float().cpu())
            cell.test_features.append(test_features.reshape(-1).float().cpu())

    def add_missing(self, group: tuple[Any, ...], variant: str) -> None:
        """A record of ``group`` lacks the test image for ``variant``."""
        self._cell(group, variant).missing += 1

    def records(self) -> list[dict[str, Any]]:
        out = []
        for group, variants in self._cells.items():
            for variant in [None, *(t.spec for t in self.transforms)]:
                if variant in variants:
                    out.append(self._summary(group, variant, variants[variant]))
        return out

    def _summary(self, group: tuple[Any, ...], variant: str | None, cell: _Cell) -> dict[str, Any]:
        test = self.test_field if variant is None else transform_field(self.test_field, variant)
        ref = self.ref_field if variant is None else transform_field(self.ref_field, variant)  # the control
        record: dict[str, Any] = {"kind": "immunize.summary", **dict(zip(self.group_by, group, strict=True)),
                                  "transform": variant, "ref": ref, "test": test, "n": cell.count}
        if variant is not None:
            record["missing"] = cell.missing
        skipped: dict[str, str] = {}
        notes = dict(cell.notes)
        for name in self.pair_metrics:
            record[name] = mean_std(cell.values[name])
            if record[name] is None and name in notes:
                skipped[name] = notes.pop(name)
            elif record[name] is None:
                skipped[name] = "no value for any pair"
        if self.clip is not None:
            record["clip_model"] = self.clip
            record["clip_ref"], record["clip_test"] = spread(cell.clip_ref), spread(cell.clip_test)
            if record["clip_ref"] is None:
                skipped["clip"] = "no record of the group has a prompt"
        if self.set_metrics:
            record["features"] = self.features
            if self.features is None or len(cell.ref_features) < cell.count:
                reason = self.features_skipped or "features missing for some pairs"
                for name in self.set_metrics:
                    for key in SET_METRICS.get(name).fields:
                        record[key] = None
                    skipped[name] = reason
            else:
                scores = set_scores(torch.stack(cell.ref_features) if cell.ref_features else torch.zeros(0, 0),
                                    torch.stack(cell.test_features) if cell.test_features else torch.zeros(0, 0),
                                    self.set_metrics, nearest_k=self.nearest_k)
                record.update(scores.values)
                skipped.update(scores.skipped)
                notes.update(scores.notes)
        record["skipped"] = skipped
        record["notes"] = notes
        return record


def _hashable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, sort_keys=True)
    return value
