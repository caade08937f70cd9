"""Running a vision transformer on a subset of its tokens (certify's and ablate's missingness).

Every token is embedded and position-encoded on the full grid first, then only the kept
tokens go through the blocks, so a token keeps its own positional embedding. Batches whose
rows keep the same number of tokens use a plain gather; rows with different counts are
padded and the padding is hidden with a key-padding attention mask. Pooling only sees kept
tokens. Works on timm's ``VisionTransformer`` through its public parts — no monkey-patching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supports_token_drop(net: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(net, VisionTransformer)


def vit_patch_size(net: nn.Module) -> int:
    patch = net.patch_embed.patch_size
    return int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def token_keep_mask(visible: torch.Tensor, patch_size: int, rule: str = "any") -> torch.Tensor:
    """Which tokens to keep, from a pixel visibility mask (1 = visible), as B×N booleans.

    ``rule="any"`` keeps a token when any pixel of its window is visible (certify: drop only
    fully masked tokens); ``rule="all"`` keeps it only when every pixel is visible (ablate:
    drop any token touched by a removed pixel).
    """
    if visible.ndim == 2:
        visible = visible[None, None]
    elif visible.ndim == 3:
        visible = visible[:, None]
    visible = visible.float().amax(dim=1, keepdim=True)
    if rule == "any":
        pooled = F.max_pool2d(visible, patch_size)
    elif rule == "all":
        pooled = -F.max_pool2d(-visible, patch_size)
    else:
        raise ValueError(f"unknown keep rule {rule!r}; expected 'any' or 'all'")
    return pooled.flatten(1) > 0


def _embed(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return vit._pos_embed(vit.patch_embed(x))


def _pool(vit: nn.Module, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Pool like ``vit.pool`` but only over valid (kept, unpadded) patch tokens.

    A row with no patch token pools to zeros (no evidence), alone or padded in a batch, so
    average pooling never divides by zero and never depends on the row's batchmates.
    """
    if vit.global_pool == "token":
        return vit.pool(x)
    if valid is None:
        if x.shape[1] > vit.num_prefix_tokens:
            return vit.pool(x)
        valid = torch.zeros(x.shape[0], 0, dtype=torch.bool, device=x.device)
    if vit.attn_pool is not None or vit.global_pool != "avg" or vit.pool_include_prefix:
        raise NotImplementedError(f"token dropping with varying counts supports 'token' and 'avg' pooling, "
                                  f"not {vit.global_pool!r} / attention pooling")
    patches = x[:, vit.num_prefix_tokens:]
    weights = valid.unsqueeze(-1)
    summed = torch.where(weights, patches, patches.new_zeros(())).sum(1)  # where, not *: a padded NaN stays out
    return summed / weights.sum(1).clamp_min(1).to(patches.dtype)


def _head(vit: nn.Module, x: torch.Tensor, valid: torch.Tensor | None, pre_logits: bool) -> torch.Tensor:
    x = vit.fc_norm(_pool(vit, vit.norm(x), valid))
    x = vit.head_drop(x)
    return x if pre_logits else vit.head(x)


def _padding_bias(valid: torch.Tensor, prefix: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias (B×1×1×T) that hides padded or dropped key tokens."""
    keys = torch.cat([valid.new_ones(valid.shape[0], prefix), valid], dim=1)
    bias = torch.zeros(keys.shape, dtype=dtype, device=valid.device).masked_fill_(~keys, float("-inf"))
    return bias[:, None, None, :]


def _blocks(vit: nn.Module, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    x = vit.norm_pre(x)
    if bias is None:
        return vit.blocks(x)
    for block in vit.blocks:
        x = block(x, attn_mask=bias)
    return x


def vit_forward_kept(vit: nn.Module, x: torch.Tensor | None, keep: torch.Tensor, pre_logits: bool = False, *,
                     tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``vit`` on normalised images ``x`` using only the tokens where ``keep`` is True.

    ``keep`` is N (or 1×N) booleans shared by the batch, or B×N. Class and register tokens are
    always kept. The result equals running every token with the dropped ones masked out of
    attention (:func:`vit_forward_masked`), at the cost of the kept tokens only.
    ``tokens`` (B×(prefix + most kept)×D: prefix tokens, then each row's kept tokens embedded and
    position-encoded in their original order, padded), with ``x`` None, replaces embedding ``x``
    when the caller has them cheaper (certify's band ablations sum per-column contributions
    instead of running a convolution per ablation).
    """
    prefix = vit.num_prefix_tokens
    if tokens is None:
        tokens = _embed(vit, x)
    batch, dim = len(tokens), tokens.shape[-1]
    keep = keep.to(tokens.device).bool()
    if keep.ndim == 1 or keep.shape[0] == 1:  # one keep set shared by the batch
        keep = keep.reshape(-1).expand(batch, -1)
    counts = keep.sum(1)
    width = int(counts.max())
    if x is not None:
        if keep.shape != (batch, tokens.shape[1] - prefix):
            raise ValueError(f"keep mask has shape {list(keep.shape)}; expected [{batch}, {tokens.shape[1] - prefix}]")
        # Kept indices first, in their original order (a stable sort of "dropped" flags).
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
        kept = torch.gather(tokens[:, prefix:], 1, order.unsqueeze(-1).expand(-1, -1, dim))
        tokens = torch.cat([tokens[:, :prefix], kept], dim=1)
    elif tokens.shape[1] != prefix + width:
        raise ValueError(f"tokens hold {tokens.shape[1]} per row; keep says {prefix} + {width}")
    if bool((counts == width).all()):
        valid, bias = None, None
    else:
        valid = torch.arange(width, device=keep.device)[None, :] < counts[:, None]
        bias = _padding_bias(valid, prefix, tokens.dtype)
    return _head(vit, _blocks(vit, tokens, bias), valid, pre_logits)


def vit_forward_masked(vit: nn.Module, x: torch.Tensor, keep: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    """Reference semantics of token dropping: all tokens run, dropped ones hidden from attention.

    Costs the full sequence; :func:`vit_forward_kept` gives the same result cheaper.
    """
    tokens = _embed(vit, x)
    keep = keep.to(tokens.device).bool()
    if keep.ndim == 1:
        keep = keep.expand(tokens.shape[0], -1)
    bias = _padding_bias(keep, vit.num_prefix_tokens, tokens.dtype)
    return _head(vit, _blocks(vit, tokens, bias), keep, pre_logits)
