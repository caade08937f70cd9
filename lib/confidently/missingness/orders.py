"""Removal orders: which features go first (thesis §5.2).

``random`` is a permutation seeded by (seed, record id). ``saliency`` removes the most salient
feature first, ``saliency-reverse`` the least salient; saliency is the absolute vanilla
gradient of a *reference* model's predicted logit with respect to its normalised input,
averaged over each feature's pixels and channels — computed once on the clean image, so it
never depends on the fill, and shared by every model compared on it. Registered by name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.registry import Registry
from confidently.run.device import with_batch_backoff

ORDERS: Registry[Callable[[torch.Tensor | None, int, torch.Generator | None], torch.Tensor]] = Registry("order")
register_order = ORDERS.register
list_orders = ORDERS.names


@register_order("random")
def random_order(scores: torch.Tensor | None, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randperm(count, generator=generator)


@register_order("saliency")
def saliency_order(scores: torch.Tensor | None, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.sort(scores, descending=True, stable=True).indices


@register_order("saliency-reverse")
def reverse_saliency_order(scores: torch.Tensor | None, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return saliency_order(scores, count, generator).flip(0)


def needs_scores(name: str) -> bool:
    return name.startswith("saliency")


def removal_order(name: str, count: int, scores: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A permutation of 0..count-1 (int64): the order in which features are removed."""
    order = ORDERS.get(name)
    if needs_scores(name) and scores is None:
        raise UsageError(f"--order {name} needs a reference model for saliency (--ref-model)")
    return order(scores, count, generator).long()


def saliency_maps(model: Classifier, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """N×H×W: |∂ f_ŷ / ∂ x_normalised| averaged over channels, ŷ the model's own prediction; ``batch_size``
    images a pass, halved on CUDA out-of-memory (an image's map does not depend on its batch)."""
    device = model.normalize.mean.device
    std = model.normalize.std.view(1, -1, 1, 1).to(device)

    def run(size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(images), size):
            x = images[start:start + size].to(device).clone().requires_grad_(True)
            logits = model(x)
            chosen = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(chosen, x)
            out.append((grad * std).abs().mean(1).cpu())  # d/dx_norm = std · d/dx
        return torch.cat(out)

    was_training = model.training
    model.eval()
    try:
        return with_batch_backoff(run, max(1, batch_size))[0]
    finally:
        model.train(was_training)


def feature_scores(pixel_scores: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Mean of an H×W score map over each feature's pixels (F)."""
    valid = labels >= 0
    index = labels[valid].flatten()
    totals = torch.zeros(count, dtype=torch.float64).index_add_(0, index, pixel_scores[valid].flatten().double())
    sizes = torch.bincount(index, minlength=count).clamp_min(1)
    return (totals / sizes).float()
