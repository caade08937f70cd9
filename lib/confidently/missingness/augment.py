"""Missingness augmentation (ROAR-style retraining, thesis §5.2 / E.6): remove a random fraction of
grid patches from every training image, with the fill the model will be tested with.

Use as ``train_classifier(..., perturb=hook, forward=hook.forward)``: ``perturb`` fills the
removed patches (pixel fills), ``forward`` drops their tokens (``drop``), so training sees
exactly what ``ablate curve`` will.
"""

from __future__ import annotations

import torch

from confidently.errors import UsageError
from confidently.missingness.features import grid_labels, visible_after_removal
from confidently.missingness.fills import Fill
from confidently.missingness.model import PARTIAL_RULES
from confidently.models.classifier import Classifier
from confidently.models.token_drop import token_keep_mask, vit_forward_kept, vit_patch_size


class MissingnessTraining:
    def __init__(self, fill: Fill, height: int, width: int, patch_size: int, remove_frac: float = 0.5,
                 partial: str = "drop"):
        if not 0.0 <= remove_frac < 1.0:
            raise UsageError(f"--remove-frac {remove_frac}: expected 0 <= f < 1")
        self.fill, self.partial, self.remove_frac = fill, partial, remove_frac
        self.labels = grid_labels(height, width, patch_size)
        self.count = int(self.labels.max()) + 1
        self.removed = round(remove_frac * self.count)
        self._visible: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generators: list[torch.Generator]) -> torch.Tensor:
        """``generators``: one per image (seeded by its record), so the draws ignore batching."""
        scores = torch.stack([torch.rand(self.count, generator=g) for g in generators])
        flags = scores.argsort(1) < self.removed  # exactly `removed` patches per image
        self._visible = visible_after_removal(self.labels, flags).to(images.device)
        if self.fill.drops_tokens:
            return images
        seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in generators] if self.fill.random else None
        return self.fill(images, self._visible, seeds)

    def forward(self, model: Classifier, images: torch.Tensor) -> torch.Tensor:
        if not self.fill.drops_tokens or self._visible is None or not model.training:
            return model(images)
        keep = token_keep_mask(self._visible, vit_patch_size(model.net), PARTIAL_RULES[self.partial])
        if self.partial == "keep":
            images = images * self._visible[:, None].to(images.dtype)
        return vit_forward_kept(model.net, model.normalize(images), keep)
