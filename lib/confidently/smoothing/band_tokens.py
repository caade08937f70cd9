"""The kept tokens of band (column and row) ablations of a ViT's input without a convolution per ablation.

The patch embedding is linear, so a token's embedding is a sum over the pixel columns of its window
(rows, for a row band) of each column's contribution, with the visible value or the value of a blanked
pixel (0 in [0, 1], normalised like the rest). Those contributions are computed once per image; an
ablation then costs a 0/1 weighting of them per kept token, and no image is ever copied, blanked,
normalised or convolved per ablation (that was half of certify's time on vit_tiny at 224²).
The sums run in another order than the convolution, so logits differ from it by float round-off.
"""

from __future__ import annotations

import torch
from torch import nn

from confidently.models.classifier import Classifier

# pixels (n c i r j q: image, channel, token row, row in it, token column, column in it) × weight (D×C×p×p):
# the visible and the blanked contribution of each line (token column j, or row i) and offset in it.
BAND_AXES = ("cols", "rows")  # what band_axes' 0 and 1 mean
EQUATIONS = {"cols": ("ncirjq,dcrq->jqnid", "c,dcrq->qd"), "rows": ("ncirjq,dcrq->irnjd", "c,dcrq->rd")}


def band_axes(masks: torch.Tensor) -> torch.Tensor | None:
    """Per A×H×W mask, 0 when it is a band of columns (every row alike), 1 for a band of rows; None when
    some mask is neither (blocks, an upstream mask), so the ablations need the general path."""
    columns = (masks == masks[:, :1, :]).flatten(1).all(1)
    rows = (masks == masks[:, :, :1]).flatten(1).all(1)
    if not bool((columns | rows).all()):
        return None
    return (~columns).long()


def supports_band_tokens(net: nn.Module, height: int, width: int) -> bool:
    """A timm ViT whose patch embedding is one strided convolution over a fixed grid that tiles the image."""
    embed = getattr(net, "patch_embed", None)
    proj = getattr(embed, "proj", None)
    if not isinstance(proj, nn.Conv2d) or getattr(net, "dynamic_img_size", False):
        return False
    patch = proj.kernel_size
    return (patch[0] == patch[1] and tuple(proj.stride) == patch and proj.padding == (0, 0)
            and proj.dilation == (1, 1) and proj.groups == 1 and getattr(embed, "flatten", False)
            and not getattr(embed, "dynamic_img_pad", False) and height % patch[0] == 0 and width % patch[0] == 0
            and tuple(embed.grid_size) == (height // patch[0], width // patch[0]))


class BandTokens:
    """Embedded, position-encoded kept tokens of ``images`` (N×C×H×W in [0, 1]) under band ablations.

    :meth:`__call__` takes ablations of one axis that keep the same number of tokens and returns the
    rows a forward needs, ablation-major (row a·N + n is ablation a of image n), for
    :func:`~confidently.models.token_drop.vit_forward_kept`'s ``tokens``.
    """

    def __init__(self, model: Classifier, images: torch.Tensor):
        vit = model.net
        proj = vit.patch_embed.proj
        self.vit, self.patch = vit, proj.kernel_size[0]
        count, channels, height, width = images.shape
        self.grid = (height // self.patch, width // self.patch)
        weight = proj.weight.to(images.dtype)  # D×C×p×p
        p, (rows, cols) = self.patch, self.grid
        pixels = model.normalize(images).view(count, channels, rows, p, cols, p)  # n c i r j q
        blank = model.normalize(images.new_zeros(1, channels, 1, 1)).flatten()  # a blanked pixel, normalised
        bias = proj.bias.to(images.dtype) if proj.bias is not None else images.new_zeros(weight.shape[0])
        self.base = bias + torch.einsum("c,dcrq->d", blank, weight)  # a fully blanked token
        self._pixels, self._blank, self._weight = pixels, blank, weight
        self._parts: dict[str, torch.Tensor] = {}
        start = vit._pos_embed(images.new_zeros(1, rows * cols, weight.shape[0]))  # prefix tokens; positions
        self.prefix, self.positions = start[:, :vit.num_prefix_tokens], start[0, vit.num_prefix_tokens:]
        self.count = count

    def _line_parts(self, axis: str) -> torch.Tensor:
        """lines×p×N×other×D: per line (token column, or row) and offset in it, the contribution of the
        visible pixels over that of blanked ones, for every image and token along the other axis."""
        if axis not in self._parts:
            visible, blanked = EQUATIONS[axis]
            self._parts[axis] = (torch.einsum(visible, self._pixels, self._weight) - torch.einsum(
                blanked, self._blank, self._weight)[None, :, None, None, :]).contiguous()
        return self._parts[axis]

    def __call__(self, masks: torch.Tensor, axis: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, keep) for A band masks (A×H×W) of one ``axis``, each keeping the same number of tokens:
        tokens (A·N)×(prefix + K)×D, keep A×(tokens on the grid)."""
        p, (rows, cols) = self.patch, self.grid
        lines = masks[:, 0, :] if axis == "cols" else masks[:, :, 0]  # A×length: visible along the band's axis
        windows = lines.view(len(masks), -1, p).to(self.base.dtype)  # A×lines×p
        kept_lines = windows.amax(2) > 0
        per_ablation = int(kept_lines[0].sum())
        if not bool((kept_lines.sum(1) == per_ablation).all()):
            raise ValueError("band ablations of one forward must keep the same number of token lines")
        which = torch.nonzero(kept_lines)  # (ablation, line), ablation-major, lines ascending
        parts = self._line_parts(axis)  # lines×p×N×other×D
        other, dim = parts.shape[3], parts.shape[4]
        slot = torch.arange(len(which), device=which.device) % per_ablation
        out = parts.new_empty(len(masks), self.count, per_ablation, other, dim)
        for line in which[:, 1].unique().tolist():
            rows_of = which[:, 1] == line
            weights = windows[which[rows_of, 0], line]  # U×p: each ablation's visible offsets in this line
            summed = weights @ parts[line].reshape(p, -1)  # U×(N·other·D)
            out[which[rows_of, 0], :, slot[rows_of]] = summed.view(-1, self.count, other, dim)
        out = self.vit.patch_embed.norm(out + self.base)
        grid = torch.zeros(len(masks), rows, cols, dtype=torch.bool, device=masks.device)
        line_index = which[:, 1].view(len(masks), per_ablation)
        ablations = torch.arange(len(masks), device=masks.device)[:, None]
        if axis == "cols":
            out = out.transpose(2, 3)  # A×N×rows×kept columns×D: tokens in raster order
            grid[ablations, :, line_index] = True
        else:
            grid[ablations, line_index, :] = True
        keep = grid.flatten(1)
        positions = self.positions[torch.nonzero(keep)[:, 1]].view(len(masks), 1, -1, dim)
        tokens = out.reshape(len(masks), self.count, -1, dim) + positions
        prefix = self.prefix.expand(len(masks) * self.count, -1, -1)
        return torch.cat([prefix, tokens.reshape(len(masks) * self.count, -1, dim)], dim=1), keep
