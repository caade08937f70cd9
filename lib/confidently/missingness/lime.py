"""LIME on a chosen missingness (thesis §5.3; Ribeiro et al. 2016), batched and reproducible.

For one image with F features: T binary vectors z ~ Bernoulli(0.5)^F (z_0 = all ones with
``include_original``, as the ``lime`` package does), the model's probability (or logit) of its
clean class on each perturbed image, weights π = sqrt(exp(−d²/σ²)) with d the cosine distance
of z to all-ones, and a weighted ridge regression (α = ``ridge_alpha``, 1 by default, with intercept); the coefficients
are the feature scores. Perturbations come from a generator seeded by (seed, record id), so
the explanation never depends on batch size, order or shard. Backends are registered by name:
``own`` (this module, every perturbation of a batch of images in large forwards) and ``lime``
(the reference package, for comparison).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from confidently.errors import UsageError
from confidently.missingness.features import Features, visible_after_removal
from confidently.missingness.model import MissingnessModel
from confidently.registry import Registry


@dataclass(frozen=True)
class LimeConfig:
    samples: int = 1000
    kernel_width: float = 0.25
    ridge_alpha: float = 1.0
    target: str = "prob"
    include_original: bool = True

    def __post_init__(self):
        if self.target not in ("prob", "logit"):
            raise UsageError(f"--target {self.target!r}: choose prob or logit")
        if self.samples < 2:
            raise UsageError(f"--samples {self.samples}: LIME needs at least 2 perturbations")
        if self.kernel_width <= 0 or self.ridge_alpha < 0:
            raise UsageError("--kernel-width must be > 0 and --ridge-alpha >= 0")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Explanation:
    """Scores (F, higher = more important for the clean class), the ranking (descending), fit quality."""

    scores: torch.Tensor
    intercept: float
    r2: float
    pred0: int

    @property
    def ranking(self) -> torch.Tensor:
        return torch.sort(self.scores, descending=True, stable=True).indices


def perturbations(count: int, config: LimeConfig, generator: torch.Generator) -> torch.Tensor:
    """T×F binary (float) matrix of kept features."""
    z = torch.randint(0, 2, (config.samples, count), generator=generator).double()
    if config.include_original:
        z[0] = 1
    return z


def kernel_weights(z: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """π_t = sqrt(exp(−d_t²/σ²)), d_t = 1 − sqrt(|z_t|₁/F) (cosine distance to all-ones; 1 for z_t = 0)."""
    distance = 1 - torch.sqrt(z.sum(1) / z.shape[1])
    return torch.sqrt(torch.exp(-distance**2 / kernel_width**2))


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                   alpha: float) -> tuple[torch.Tensor, float, float]:
    """Coefficients, intercept and weighted R² of Ridge(alpha, intercept) with sample weights (as sklearn)."""
    z, y, weights = z.double(), y.double(), weights.double()
    w = weights / weights.sum()
    z_mean, y_mean = w @ z, w @ y
    zc, yc = z - z_mean, y - y_mean
    gram = zc.T @ (zc * weights[:, None]) + alpha * torch.eye(z.shape[1], dtype=torch.float64)
    coef = torch.linalg.solve(gram, zc.T @ (yc * weights))
    intercept = float(y_mean - z_mean @ coef)
    residual = y - (z @ coef + intercept)
    total = float((weights * yc**2).sum())
    r2 = 1.0 - float((weights * residual**2).sum()) / total if total > 0 else 0.0
    return coef, intercept, r2


def fit_explanation(z: torch.Tensor, y: torch.Tensor, config: LimeConfig, pred0: int) -> Explanation:
    coef, intercept, r2 = weighted_ridge(z, y, kernel_weights(z, config.kernel_width), config.ridge_alpha)
    return Explanation(coef.float(), intercept, r2, pred0)


def _targets(logits: torch.Tensor, classes: torch.Tensor, target: str) -> torch.Tensor:
    values = logits.softmax(-1) if target == "prob" else logits
    return values.gather(1, classes[:, None]).squeeze(1)


Backend = Callable[..., list[Explanation]]
BACKENDS: Registry[Backend] = Registry("LIME backend")
register_backend = BACKENDS.register
list_backends = BACKENDS.names


@register_backend("own")
def explain_own(model: MissingnessModel, images: torch.Tensor, features: Sequence[Features], config: LimeConfig,
                generators: Sequence[torch.Generator], fill_seeds: Sequence[Sequence[int]] | None = None,
                pred0: torch.Tensor | None = None) -> list[Explanation]:
    """LIME for a batch of images; all T perturbations of every image go through the model as rows."""
    count = len(images)
    if pred0 is None:
        clean = model.logits(images, torch.arange(count), torch.ones(count, *images.shape[-2:], dtype=torch.bool),
                             [s[0] for s in fill_seeds] if fill_seeds is not None else None)
        pred0 = clean.argmax(1)
    designs = [perturbations(feats.count, config, generator) for feats, generator in zip(features, generators,
                                                                                          strict=True)]
    rows, masks, seeds, classes = [], [], [], []
    for i, (feats, z) in enumerate(zip(features, designs, strict=True)):
        masks.append(visible_after_removal(feats.labels, z == 0))
        rows += [i] * len(z)
        classes += [int(pred0[i])] * len(z)
        if fill_seeds is not None:
            seeds += list(fill_seeds[i])
    logits = model.logits(images, torch.tensor(rows), torch.cat(masks), seeds if fill_seeds is not None else None)
    y = _targets(logits, torch.tensor(classes), config.target)
    out, start = [], 0
    for i, z in enumerate(designs):
        out.append(fit_explanation(z, y[start:start + len(z)], config, int(pred0[i])))
        start += len(z)
    return out


@register_backend("lime")
def explain_lime_package(model: MissingnessModel, images: torch.Tensor, features: Sequence[Features],
                         config: LimeConfig, generators: Sequence[torch.Generator],
                         fill_seeds: Sequence[Sequence[int]] | None = None,
                         pred0: torch.Tensor | None = None) -> list[Explanation]:
    """The reference ``lime`` package with our fill and model: removed pixels arrive as NaN and the
    classifier turns them into our missingness, so every fill (incl. ``drop``) works.

    One explainer per image, seeded from the image's generator (lime seeds only at construction).
    Random fills draw per perturbation from the image's fill seeds in lime's order.
    """
    try:
        from lime.lime_image import LimeImageExplainer
        from sklearn.linear_model import Ridge
    except ImportError as exc:  # pragma: no cover - lime is a core dependency
        raise UsageError("--backend lime needs the `lime` package (pip install lime)") from exc
    if not config.include_original:
        raise UsageError("the lime package always includes the unperturbed image: use --include-original")
    out = []
    for i, (feats, generator) in enumerate(zip(features, generators, strict=True)):
        if bool((feats.labels < 0).any()):
            raise UsageError("--backend lime needs every pixel in a feature (use --unit patch or superpixel)")
        image = images[i]
        seeds = list(fill_seeds[i]) if fill_seeds is not None else None
        cursor = [0]

        def classify(batch: np.ndarray, image=image, seeds=seeds, cursor=cursor) -> np.ndarray:
            visible = ~torch.from_numpy(np.isnan(batch).any(-1))
            stacked = image.unsqueeze(0)
            rows = torch.zeros(len(batch), dtype=torch.long)
            chunk = None if seeds is None else seeds[cursor[0]:cursor[0] + len(batch)]
            cursor[0] += len(batch)
            logits = model.logits(stacked, rows, visible, chunk)
            return (logits.softmax(-1) if config.target == "prob" else logits).double().numpy()

        explainer = LimeImageExplainer(kernel_width=config.kernel_width, feature_selection="none",
                                       random_state=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        labels = feats.labels.numpy()
        clean = classify(image.permute(1, 2, 0).double().numpy()[None])
        cursor[0] = 0
        target = int(clean.argmax(1)[0]) if pred0 is None else int(pred0[i])
        with contextlib.redirect_stderr(io.StringIO()):  # lime draws a tqdm bar per image
            explanation = explainer.explain_instance(
                image.permute(1, 2, 0).double().numpy(), classify, labels=(target,), top_labels=None,
                hide_color=float("nan"), num_features=feats.count, num_samples=config.samples,
                segmentation_fn=lambda _image, labels=labels: labels, batch_size=max(1, model.batch_size),
                model_regressor=Ridge(alpha=config.ridge_alpha, fit_intercept=True))  # lime's own default is α = 1
        scores = torch.zeros(feats.count)
        for feature, weight in explanation.local_exp[target]:
            scores[feature] = weight
        score = explanation.score[target] if isinstance(explanation.score, dict) else explanation.score
        out.append(Explanation(scores, float(explanation.intercept[target]), float(score), target))
    return out


def explain(backend: str, model: MissingnessModel, images: torch.Tensor, features: Sequence[Features],
            config: LimeConfig, generators: Sequence[torch.Generator],
            fill_seeds: Sequence[Sequence[int]] | None = None) -> list[Explanation]:
    """LIME explanations of ``images`` under ``model``'s missingness, with the chosen backend."""
    return BACKENDS.get(backend)(model, images, features, config, generators, fill_seeds)
