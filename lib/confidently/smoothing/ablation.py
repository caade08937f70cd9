"""Derandomized smoothing against adversarial patches (thesis ch. 1; Levine & Feizi 2020).

A smoothed classifier votes over *ablations* of an image — copies where all but a column,
row or block of pixels is blanked — and certifies its prediction for patches of side m when
the winner leads the runner-up by more than twice Δ(m), the most ablations one patch can
touch. With a ViT base model, fully blanked tokens are dropped, so an ablation costs a
fraction of a forward pass.

This module is the method's core: ablation sets (their kinds are registered by name in
:mod:`confidently.smoothing.kinds`), Δ exact and in closed form, vote counting with token dropping,
the certificate, training on ablations and the patch attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from confidently.errors import UsageError
from confidently.models.classifier import Classifier
from confidently.models.token_drop import token_keep_mask, vit_forward_kept, vit_patch_size
from confidently.smoothing.band_tokens import BAND_AXES, BandTokens, band_axes, supports_band_tokens
from confidently.smoothing.kinds import ABLATION_PARTS


def _band_keeps(length: int, size: int, stride: int) -> np.ndarray:
    """A×length booleans: ablation t keeps positions (t + i) mod length for 0 <= i < size."""
    starts = np.arange(0, length, stride)
    offsets = (starts[:, None] + np.arange(min(size, length))[None, :]) % length
    keeps = np.zeros((len(starts), length), dtype=bool)
    np.put_along_axis(keeps, offsets, True, axis=1)
    return keeps


def _axis_delta_exact(length: int, size: int, stride: int, patch: int) -> int:
    """Most band ablations one patch of side ``patch`` can intersect, over every placement.

    Kept positions are prefix-summed, so "ablation t sees [a, a + patch)" is one subtraction
    for all t and a at once (O(A·L) per patch side; run once per side by certify).
    """
    patch = min(patch, length)
    kept_before = np.concatenate([np.zeros((len(range(0, length, stride)), 1), dtype=np.int32),
                                  np.cumsum(_band_keeps(length, size, stride), axis=1, dtype=np.int32)], axis=1)
    seen = (kept_before[:, patch:] - kept_before[:, :length - patch + 1]) > 0  # A × placements
    return int(seen.sum(axis=0).max())


def _axis_delta_closed(length: int, size: int, stride: int, patch: int) -> int:
    count = math.ceil(length / stride)
    return min(count, math.ceil((patch + size - 1) / stride))


@dataclass(frozen=True)
class Ablation:
    """An ablation set: ``kind`` (column, row, block or both), band ``size`` b, ``stride`` s."""

    kind: str = "column"
    size: int = 4
    stride: int = 1

    def __post_init__(self):
        ABLATION_PARTS.get(self.kind)  # an unknown kind fails with the registered ones
        if self.size < 1 or self.stride < 1:
            raise UsageError(f"ablation size and stride must be >= 1 (got {self.size}, {self.stride})")

    def _parts(self) -> list[tuple[str, ...]]:
        return ABLATION_PARTS.get(self.kind)

    def masks(self, height: int, width: int) -> torch.Tensor:
        """A×H×W visibility masks (True = kept), in start order (row-major for blocks)."""
        out = []
        for axes in self._parts():
            rows = _band_keeps(height, self.size, self.stride) if "rows" in axes else np.ones((1, height), bool)
            cols = _band_keeps(width, self.size, self.stride) if "cols" in axes else np.ones((1, width), bool)
            out.append((rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, height, width))
        return torch.from_numpy(np.concatenate(out))

    def starts(self, height: int, width: int) -> list[tuple[int | None, int | None]]:
        """(row start, column start) of each ablation, in mask order (None: the axis is not banded)."""
        out: list[tuple[int | None, int | None]] = []
        for axes in self._parts():
            rows = range(0, height, self.stride) if "rows" in axes else [None]
            cols = range(0, width, self.stride) if "cols" in axes else [None]
            out += [(r, c) for r in rows for c in cols]
        return out

    def restride(self, height: int, width: int, stride: int) -> tuple[Ablation, list[int]]:
        """The same ablations at a coarser ``stride`` (a multiple of this one), and which of ours they are."""
        if stride % self.stride:
            raise UsageError(f"--stride {stride} must be a multiple of the stride the votes were taken at "
                             f"({self.stride})")
        keep = [i for i, (r, c) in enumerate(self.starts(height, width))
                if (r is None or r % stride == 0) and (c is None or c % stride == 0)]
        return Ablation(self.kind, self.size, stride), keep

    def check(self, height: int, width: int, patch_sizes: list[int] = (), max_ablations: int | None = 10_000) -> None:
        """Refuse geometries that make no sense or that would take an unreasonable number of forwards."""
        lengths = {"rows": height, "cols": width}
        side = min(lengths[axis] for axes in self._parts() for axis in axes)
        if self.size > side:
            raise UsageError(f"--ablation-size {self.size} is larger than the image side ({side})")
        if self.stride > self.size:
            raise UsageError(f"--stride {self.stride} is larger than the ablation size {self.size}: some pixels "
                             "would never be seen")
        for patch in patch_sizes:
            if patch >= min(height, width):
                raise UsageError(f"patch size {patch} is not smaller than the image ({height}×{width})")
        count = self.count(height, width)
        if max_ablations is not None and count > max_ablations:
            raise UsageError(f"{self.kind} ablations of size {self.size} at stride {self.stride} on {height}×{width} "
                             f"images take {count} forwards per image; raise --stride or pass --allow-huge")

    def count(self, height: int, width: int) -> int:
        per_axis = {"rows": math.ceil(height / self.stride), "cols": math.ceil(width / self.stride)}
        return sum(math.prod(per_axis[a] for a in axes) for axes in self._parts())

    def delta(self, height: int, width: int, patch: int, exact: bool = True) -> int:
        """Δ(m): the most ablations an m×m patch can intersect (``exact``: by enumeration)."""
        axis_delta = _axis_delta_exact if exact else _axis_delta_closed
        lengths = {"rows": height, "cols": width}
        return sum(math.prod(axis_delta(lengths[a], self.size, self.stride, patch) for a in axes)
                   for axes in self._parts())


BAND_PRESETS = {32: 4, 224: 19}  # side → band width b: CIFAR-10 b = 4 of 32, ImageNet b = 19 of 224 (thesis)


def default_ablation_size(kind: str, height: int, width: int) -> int:
    """Band width b for a model ``certify fit`` did not train: the thesis's b at its image sizes,
    else its ImageNet ratio 19/224 of the banded side (a b of 4 at 224² sees almost nothing).

    Blocks have no such rule (the thesis sweeps 55–115 px at 224²): the user must choose.
    """
    if kind == "block":
        raise UsageError("--ablation block needs --ablation-size for a model `certify fit` did not train "
                         "(the thesis uses blocks of 55–115 px on 224×224 images)")
    side = {"column": width, "row": height}.get(kind, min(height, width))
    return BAND_PRESETS.get(side, max(1, round(side * 19 / 224)))


def patch_side_for_fraction(fraction: float, height: int, width: int) -> int:
    """Side m of the smallest square patch covering ``fraction`` of the image, m = ⌈√(f·h·w)⌉
    (1, 2, 3 % of 224² → 23, 32, 39), in exact arithmetic: 0.25 % of 280² is 14, not 15."""
    area = math.ceil(Fraction(str(fraction)) * height * width)  # str: the decimal the user wrote
    return max(1, math.isqrt(area - 1) + 1) if area > 0 else 1


def smoothed_prediction(counts: torch.Tensor) -> torch.Tensor:
    """argmax of the vote counts with ties broken to the smallest class index (explicitly)."""
    top = counts.max(dim=1, keepdim=True).values
    classes = torch.arange(counts.shape[1], device=counts.device).expand_as(counts)
    return torch.where(counts == top, classes, counts.shape[1]).min(dim=1).values


def certify_counts(counts: torch.Tensor, delta: int, tie: str = "strict",
                   unseen: torch.Tensor | int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, certified) per image from N×k vote counts and Δ.

    ``strict`` (thesis eq. 1.2): n_c > max_{c'≠c} n_{c'} + 2Δ. ``index`` (Levine & Feizi):
    a tie at exactly 2Δ still certifies against classes with a larger index, because ties
    break to the smallest index. ``unseen`` (per image, or one number) ablations whose votes
    were not taken may each add one to any rival: certified then holds whatever they are.
    """
    pred = smoothed_prediction(counts)
    winner = counts.gather(1, pred[:, None])
    others = counts.clone()
    lowest = -math.inf if counts.is_floating_point() else torch.iinfo(counts.dtype).min // 2
    others.scatter_(1, pred[:, None], lowest)
    margin = torch.as_tensor(unseen, device=counts.device).reshape(-1, 1) + 2 * delta  # 1×1 or N×1
    if tie == "strict":
        return pred, (winner > others.max(dim=1, keepdim=True).values + margin)[:, 0]
    if tie == "index":
        classes = torch.arange(counts.shape[1], device=counts.device)[None, :]
        beats = (winner > others + margin) | ((winner == others + margin) & (pred[:, None] < classes))
        return pred, beats.all(dim=1)
    raise UsageError(f"unknown tie rule {tie!r}; choose strict or index")


def could_certify(counts: torch.Tensor, delta: int, tie: str, unseen: torch.Tensor) -> torch.Tensor:
    """Whether some class could still be certified at Δ once the ``unseen`` votes (per image) are taken:
    each class is tried with all of them going its way. Only classes that could then lead are tried."""
    possible = torch.zeros(len(counts), dtype=torch.bool, device=counts.device)
    top = counts.max(dim=1, keepdim=True).values
    for cls in torch.nonzero((counts + unseen[:, None] >= top).any(0)).flatten().tolist():
        boosted = counts.clone()
        boosted[:, cls] += unseen
        possible |= certify_counts(boosted, delta, tie)[1]
    return possible


def max_certified_patch(counts: torch.Tensor, ablation: Ablation, height: int, width: int,
                        tie: str = "strict", exact: bool = True) -> torch.Tensor:
    """The largest m each image is certified for (0 if none); Δ grows with m, so scan upward."""
    best = torch.zeros(len(counts), dtype=torch.long)
    for patch in range(1, max(height, width) + 1):
        _, certified = certify_counts(counts, ablation.delta(height, width, patch, exact), tie)
        if not certified.any():
            break
        best[certified] = patch
    return best


def ablation_votes(model: Classifier, images: torch.Tensor, ablation: Ablation, *, drop_tokens: bool | None = None,
                   batch_size: int = 256, visible: torch.Tensor | None = None, theta: float | None = None,
                   which: list[int] | None = None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The base classifier's votes for every image × ablation.

    With the default argmax rule: N×A int64 classes. With a threshold ``theta`` (Levine &
    Feizi): N×A×k booleans, a vote for every class whose softmax probability is ≥ θ (an
    ablation may vote for none). ``which`` evaluates only those ablation indices (the others
    are left to other ``--ablation-shard`` runs) and the result has one column per index.

    Masked pixels are 0 in [0, 1] space (normalisation comes after, inside the model).
    ``drop_tokens`` (default: on for ViTs) runs only tokens with a visible pixel.
    ``visible`` (N×H×W, 1 = visible) is ANDed with every ablation mask: a region removed
    upstream stays removed, and the certificate stays sound. Images whose mask is all ones
    vote as if they had none, whatever their batchmates.
    """
    options = dict(drop_tokens=drop_tokens, batch_size=batch_size, theta=theta, which=which)
    if visible is not None:
        unmasked = visible.flatten(1).bool().all(1)
        if bool(unmasked.all()):
            visible = None
        elif bool(unmasked.any()):
            plain = ablation_votes(model, images[unmasked], ablation, **options)
            masked = ablation_votes(model, images[~unmasked], ablation, visible=visible[~unmasked],
                                    progress=progress, **options)
            votes = torch.empty((len(images), *plain.shape[1:]), dtype=plain.dtype)
            votes[unmasked.cpu()], votes[~unmasked.cpu()] = plain, masked
            return votes
    height, width = images.shape[-2:]
    masks = ablation.masks(height, width).to(images.device)
    if which is not None:
        masks = masks[which]
    drop = model.is_vit if drop_tokens is None else drop_tokens
    if drop and not model.is_vit:
        raise UsageError(f"--drop-tokens on needs a ViT; {model.arch} is not one")
    patch = vit_patch_size(model.net) if drop else 0
    per_forward = max(1, batch_size // max(len(images), 1))
    shape = (len(images), len(masks)) if theta is None else (len(images), len(masks), model.num_classes)
    votes = torch.empty(shape, dtype=torch.long if theta is None else torch.bool, device=images.device)
    # Ablations that keep the same number of tokens share forwards, so a plain gather serves
    # them (no padding, no attention mask); an upstream mask makes counts per image, so it pads.
    # Bands of columns or rows (and no upstream mask) get their tokens from BandTokens: no
    # image is blanked, normalised or embedded per ablation.
    groups = [torch.arange(len(masks))]
    axes = band = None
    if drop and visible is None:
        key = token_keep_mask(masks, patch, "any").sum(1).cpu()
        if supports_band_tokens(model.net, height, width):
            axes = band_axes(masks)
        if axes is not None:
            axes = axes.cpu()
            key = 2 * key + axes  # one band axis per forward
        groups = [torch.nonzero(key == value).flatten() for value in key.unique()]
    chunks = [group[start:start + per_forward] for group in groups for start in range(0, len(group), per_forward)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if axes is not None:
            band = BandTokens(model, images)
        for index in chunks:
            chunk = masks[index.to(masks.device)]
            if band is not None:
                tokens, keep = band(chunk, BAND_AXES[int(axes[index[0]])])
                logits = vit_forward_kept(model.net, None, keep.repeat_interleave(len(images), 0), tokens=tokens)
            else:
                kept = chunk[:, None].expand(-1, len(images), -1, -1)  # A'×N×H×W
                if visible is not None:
                    kept = kept & visible[None].bool()
                flat = kept.reshape(-1, height, width)
                batch = images.repeat(len(chunk), 1, 1, 1) * flat[:, None]
                if drop:
                    logits = vit_forward_kept(model.net, model.normalize(batch), token_keep_mask(flat, patch, "any"))
                else:
                    logits = model(batch)
            columns = index.to(votes.device)
            if theta is None:
                votes[:, columns] = logits.argmax(1).view(len(chunk), len(images)).T
            else:
                above = logits.float().softmax(1) >= theta
                votes[:, columns] = above.view(len(chunk), len(images), -1).transpose(0, 1)
            if progress is not None:
                progress(len(chunk))
    model.train(was_training)
    return votes.cpu()


def vote_counts(votes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """N×k counts from N×A class votes (-1 abstains) or N×A×k threshold votes."""
    if votes.ndim == 3:
        return votes.long().sum(dim=1)
    counts = torch.zeros(len(votes), num_classes, dtype=torch.long)
    valid = votes >= 0
    counts.scatter_add_(1, votes.clamp_min(0), valid.long())
    return counts


class AblationTraining:
    """Training on random ablations (thesis A.1.3): one random ablation of the set per image.

    Use as ``train_classifier(..., perturb=hook, forward=hook.forward)``: ``perturb`` blanks
    the pixels outside each image's band; ``forward`` runs a ViT on the tokens with a visible
    pixel, so training sees what certification will (train and certify in the same mode).
    """

    def __init__(self, ablation: Ablation, height: int, width: int, drop_tokens: bool):
        self.masks = ablation.masks(height, width)
        self.drop_tokens = drop_tokens
        self._current: torch.Tensor | None = None

    def __call__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generators: list[torch.Generator]) -> torch.Tensor:
        """``generators``: one per image (seeded by its record), so the draws ignore batching."""
        choice = torch.cat([torch.randint(0, len(self.masks), (1,), generator=g) for g in generators])
        self._current = self.masks[choice].to(images.device)
        return images * self._current[:, None]

    def forward(self, model: Classifier, images: torch.Tensor) -> torch.Tensor:
        if not self.drop_tokens or self._current is None:
            return model(images)
        keep = token_keep_mask(self._current, vit_patch_size(model.net), "any")
        return vit_forward_kept(model.net, model.normalize(images), keep)


SUMMARY_KEYS = ("label", "correct", "base_pred", "ablation_acc", "certified", "certified_correct", "gap",
                "max_certified_patch")  # all summarize_certificates reads of a result: what a run keeps per image


def summarize_certificates(results: list[dict]) -> dict:
    """Dataset figures from per-image ``certify`` results (recomputed from records, never averaged).

    Reads only the ``SUMMARY_KEYS`` of each result. Certified accuracy is never reported without
    the clean (smoothed) and base accuracy next to it.
    """
    labelled = [r for r in results if r.get("label") is not None]
    sizes = sorted({m for r in results for m in r.get("certified", {})}, key=int)

    def fraction(predicate, rows) -> float | None:
        return sum(1 for r in rows if predicate(r)) / len(rows) if rows else None

    histogram: dict[str, int] = {}
    for r in results:
        key = str(r["max_certified_patch"])
        histogram[key] = histogram.get(key, 0) + 1
    return {
        "n": len(results), "n_labeled": len(labelled),
        "clean_acc": fraction(lambda r: r["correct"], labelled),
        "base_acc": fraction(lambda r: r["base_pred"] == r["label"], labelled),
        "ablation_acc": (sum(r["ablation_acc"] for r in labelled) / len(labelled)) if labelled else None,
        "certified_acc": {m: fraction(lambda r, m=m: r["certified_correct"][m], labelled) for m in sizes},
        "certified_wrong": {m: fraction(lambda r, m=m: r["certified"][m] and not r["correct"], labelled)
                            for m in sizes},
        "mean_gap": sum(r["gap"] for r in results) / len(results) if results else None,
        "max_patch_hist": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
    }


def patch_contents(names: list[str], patch: int, channels: int, generator: torch.Generator,
                   donor: torch.Tensor | None = None) -> dict[str, Callable[[int, int], torch.Tensor]]:
    """Patch fillers by name: ``zeros``, ``ones``, ``noise`` and ``swap`` (the same region of ``donor``,
    an image of another class). Each maps a placement (row, col) to a C×m×m patch."""
    noise = torch.rand(channels, patch, patch, generator=generator)
    makers: dict[str, Callable[[int, int], torch.Tensor]] = {
        "zeros": lambda r, c: torch.zeros(channels, patch, patch),
        "ones": lambda r, c: torch.ones(channels, patch, patch),
        "noise": lambda r, c: noise,
    }
    if donor is not None:
        makers["swap"] = lambda r, c: donor[:, r:r + patch, c:c + patch]
    unknown = [n for n in names if n not in (*makers, "swap")]
    if unknown:
        raise UsageError(f"unknown patch contents {unknown}; choose zeros, ones, noise, swap")
    return {name: makers[name] for name in names if name in makers}


def patch_attack(model: Classifier, image: torch.Tensor, votes: torch.Tensor, ablation: Ablation, patch: int,
                 contents: dict[str, Callable[[int, int], torch.Tensor]],
                 positions: list[tuple[int, int]] | None = None, *, drop_tokens: bool | None = None,
                 theta: float | None = None, batch_size: int = 256, visible: torch.Tensor | None = None) -> list[dict]:
    """Paste real patches on ``image`` and recompute the smoothed class; return every placement that flips it.

    Only ablations that see the patch can change, so only they are re-run (the others keep
    their ``votes``); this is the empirical side of the certificate (``certify check``).
    ``visible`` (H×W) is the upstream mask ``votes`` were taken with: re-run ablations use it too.
    """
    height, width = image.shape[-2:]
    masks = ablation.masks(height, width)
    counts = vote_counts(votes[None], model.num_classes)
    original = int(smoothed_prediction(counts)[0])
    if positions is None:
        positions = [(r, c) for r in range(height - patch + 1) for c in range(width - patch + 1)]
    flips = []
    for row, col in positions:
        touched = masks[:, row:row + patch, col:col + patch].flatten(1).any(1).nonzero().flatten().tolist()
        for name, make in contents.items():
            attacked = image.clone()
            attacked[:, row:row + patch, col:col + patch] = make(row, col)
            new = votes.clone()
            if touched:
                new[touched] = ablation_votes(model, attacked[None], ablation, drop_tokens=drop_tokens, theta=theta,
                                              which=touched, batch_size=batch_size,
                                              visible=None if visible is None else visible[None])[0]
            pred = int(smoothed_prediction(vote_counts(new[None], model.num_classes))[0])
            if pred != original:
                flips.append({"row": row, "col": col, "content": name, "pred": pred})
    return flips
