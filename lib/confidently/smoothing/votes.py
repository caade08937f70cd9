"""The votes file: every ablation's vote per image (int16 classes, or uint8 per-class flags under the
threshold rule), with the geometry and rule they were taken under; ablation shards of one run merge."""

from __future__ import annotations

import os
from typing import Any

import torch

from confidently.errors import InvalidInput
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.smoothing.certify import Certifier


def save_votes(path: str | os.PathLike, certifier: Certifier, which: list[int] | None, model: str, *,
               config: dict[str, Any] | None = None, seed: int = 0) -> None:
    """Every ablation's vote that ``certifier`` collected (``which``: the ablations it computed, None for all),
    so other patch sizes, strides and tie rules need no model (:func:`load_votes`, ``certify recertify``)."""
    certificates = certifier.certificates
    geometry, height, width = certificates.ablation, certificates.height, certificates.width
    rule, drop = certificates.rule, certificates.drop_tokens
    total = geometry.count(height, width)
    computed = torch.zeros(total, dtype=torch.bool)
    computed[which if which is not None else slice(None)] = True
    rows = certifier.collected
    if rule["rule"] == "argmax":
        votes = torch.full((len(rows), total), -2, dtype=torch.int16)  # -2: another ablation shard's
        for row, (_, _, vote, _) in enumerate(rows):
            votes[row, computed] = vote.to(torch.int16)
    else:
        votes = torch.zeros((len(rows), total, certifier.model.num_classes), dtype=torch.uint8)
        for row, (_, _, vote, _) in enumerate(rows):
            votes[row, computed] = vote.to(torch.uint8)
    meta = artifact_metadata(tool="certify", kind="votes", config=config or {}, seed=seed,
                             ids=[r[0] for r in rows], labels=[r[1] for r in rows],
                             geometry={"kind": geometry.kind, "size": geometry.size, "stride": geometry.stride,
                                       "height": height, "width": width},
                             rule=rule, drop_tokens=drop, num_classes=certifier.model.num_classes, model=model)
    save_artifact(path, {"votes": votes, "computed": computed,
                         "base_pred": torch.tensor([r[3] for r in rows], dtype=torch.long)}, meta)


def load_votes(paths: list[str]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Merge votes files of one geometry (ablation shards add up); (votes, base predictions, metadata)."""
    merged = computed = base = meta = None
    for path in paths:
        tensors, this = load_artifact(path)
        if this.get("kind") != "votes" or "votes" not in tensors:
            raise InvalidInput(f"{path} is not a certify votes file (write one with `certify run --votes-out`)")
        if meta is None:
            merged, computed, base, meta = tensors["votes"].clone(), tensors["computed"].clone(), \
                tensors["base_pred"], this
            continue
        for key in ("geometry", "rule", "ids", "num_classes"):
            if this.get(key) != meta.get(key):
                raise InvalidInput(f"{path} differs from {paths[0]} in {key}; only ablation shards of one run merge")
        overlap = computed & tensors["computed"]
        if overlap.any():
            raise InvalidInput(f"{path} repeats ablations already in the other files")
        merged[:, tensors["computed"]] = tensors["votes"][:, tensors["computed"]]
        computed |= tensors["computed"]
    if not bool(computed.all()):
        missing = int((~computed).sum())
        raise InvalidInput(f"{missing} ablations have no votes in {', '.join(paths)}; pass every ablation shard")
    return merged, base, meta
