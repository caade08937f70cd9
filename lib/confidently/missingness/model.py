"""A classifier that sees images with parts missing: one fill, many (image, visibility) pairs.

Rows name an image of the batch and a visibility mask, so a thousand LIME perturbations of
one image never copy it a thousand times; rows run in chunks of ``batch_size`` (bounded
memory), halved on CUDA out-of-memory. With ``drop``, a ViT drops every token that touches a removed pixel (``partial =
"drop"``, the conservative rule of thesis E.2) or keeps tokens with any visible pixel
(``partial = "keep"``, certify's rule; their removed pixels are zeroed) — the shared
:func:`~confidently.models.token_drop.token_keep_mask` with the rule spelled out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from confidently.errors import UsageError
from confidently.missingness.fills import FILL_NAMES, Fill
from confidently.models.classifier import Classifier
from confidently.models.token_drop import token_keep_mask, vit_forward_kept, vit_patch_size
from confidently.run.device import with_batch_backoff

PARTIAL_RULES = {"drop": "all", "keep": "any"}


class MissingnessModel:
    """``model`` under missingness ``fill``; ``logits(images, rows, visible, seeds)`` in chunks."""

    def __init__(self, model: Classifier, fill: Fill, batch_size: int = 256, partial: str = "drop"):
        if fill.drops_tokens and not model.is_vit:
            pixel_fills = ", ".join(name for name in FILL_NAMES if name != "drop")
            raise UsageError(f"--fill drop removes tokens and needs a vision transformer; {model.arch} is not one. "
                             f"Fills that work on it: {pixel_fills}")
        if partial not in PARTIAL_RULES:
            raise UsageError(f"--partial {partial!r}: choose drop (drop any touched token) or keep")
        self.model, self.fill, self.batch_size, self.partial = model, fill, max(1, batch_size), partial
        self.device = model.normalize.mean.device
        self.patch = vit_patch_size(model.net) if fill.drops_tokens else None

    def _chunk_logits(self, images: torch.Tensor, visible: torch.Tensor, seeds: Sequence[int] | None,
                      keep: torch.Tensor | None) -> torch.Tensor:
        if keep is None:
            return self.model(self.fill(images, visible, seeds))
        if self.fill.paints:  # drop over a paint: kept tokens show what they still hold of it
            images = self.fill(images, visible, seeds)
        elif self.partial == "keep":
            images = images * visible[:, None].to(images.dtype)
        return vit_forward_kept(self.model.net, self.model.normalize(images), keep)

    def forward_chunks(self, count: int, order: torch.Tensor | None, kept: torch.Tensor | None,
                       batch_size: int | None = None):
        """Row indices per forward: ``batch_size`` rows (default: the model's), and with ``drop`` a new chunk
        wherever the kept-token count changes once a chunk holds an eighth of a batch (little padding, big
        forwards)."""
        batch_size = batch_size or self.batch_size
        if order is None:
            yield from torch.arange(count).split(batch_size)
            return
        least = max(1, batch_size // 8)
        counts = kept[order].tolist()
        start = 0
        for stop in range(1, count + 1):
            full = stop - start == batch_size
            changes = stop < count and counts[stop] != counts[stop - 1] and stop - start >= least
            if full or changes or stop == count:
                yield order[start:stop]
                start = stop

    @torch.no_grad()
    def logits(self, images: torch.Tensor, rows: torch.Tensor, visible: torch.Tensor,
               seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Logits (R×C) for rows ``rows`` (indices into ``images``) with visibility ``visible`` (R×H×W).

        With ``drop``, rows run sorted by their kept-token count, so a chunk pads to nearly
        its own length and the forward costs what the kept tokens cost. On CUDA out-of-memory the
        chunks are halved until they fit, and stay that size for the calls after (a row's logits do not
        depend on its chunk).
        """
        images = images.to(self.device)
        keep = order = None
        if self.fill.drops_tokens:
            keep = token_keep_mask(visible, self.patch, PARTIAL_RULES[self.partial])
            order = torch.sort(keep.sum(1), stable=True).indices

        def run(size: int) -> torch.Tensor:
            out = torch.empty(len(rows), self.model.num_classes)
            for index in self.forward_chunks(len(rows), order, None if keep is None else keep.sum(1), size):
                chunk_seeds = None if seeds is None else [seeds[i] for i in index.tolist()]
                out[index] = self._chunk_logits(images[rows[index].to(self.device)], visible[index].to(self.device),
                                                chunk_seeds, None if keep is None else keep[index].to(self.device)
                                                ).float().cpu()
            return out

        out, self.batch_size = with_batch_backoff(run, self.batch_size)
        return out
