"""Small models for the missingness tests: a tiny ViT with 4×4 tokens and a known additive model."""

from __future__ import annotations

import pytest
import torch
from confidently.models import create_model
from torch import nn


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("tiny_vit", 10, depth=2).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return create_model("tiny_resnet", 10).eval()


class AdditiveNet(nn.Module):
    """Logits [0, s] with s = Σ_j w_j · (mean of patch j): on an all-ones image under black fill,
    class 1's probability is σ(Σ_j w_j z_j) — a model whose feature importances are known."""

    def __init__(self, weights: torch.Tensor, patch: int):
        super().__init__()
        self.weights, self.patch = weights, patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = nn.functional.avg_pool2d(x.mean(1, keepdim=True), self.patch).flatten(1)
        score = means @ self.weights
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.fixture
def additive():
    """A Classifier around :class:`AdditiveNet` on 16×16 images with 4×4 patches (16 features)."""
    from confidently.models.classifier import Classifier

    weights = torch.linspace(-1.0, 2.0, 16)[torch.randperm(16, generator=torch.Generator().manual_seed(3))]
    net = AdditiveNet(weights, 4)
    model = Classifier(net, arch="additive", arch_kwargs={}, num_classes=2, input_size=(1, 16, 16), mean=(0.0,),
                       std=(1.0,))
    return model.eval(), weights
