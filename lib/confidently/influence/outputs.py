"""What a transferred model's output on a target example is (thesis H.2.1): registered by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from confidently.registry import Registry

if TYPE_CHECKING:  # the outputs only call tensor methods: listing their names (influence --help) loads no torch
    import torch

OUTPUTS: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("output")
register_output = OUTPUTS.register
list_outputs = OUTPUTS.names


def _others_max(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return values.scatter(1, labels[:, None], float("-inf")).max(1).values


@register_output("softmax_correct")
def softmax_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1).gather(1, labels[:, None]).squeeze(1)


@register_output("logit_correct")
def logit_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, labels[:, None]).squeeze(1)


@register_output("margin_raw")
def margin_raw(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logit_correct(logits, labels) - _others_max(logits, labels)


@register_output("margin_softmax")
def margin_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(1)
    return softmax_correct(logits, labels) - _others_max(probs, labels)


@register_output("correct")
def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).float()


def all_outputs(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every registered output (float32 [n]) and the predictions (int64 [n])."""
    out = {name: fn(logits.float(), labels).float() for name, fn in OUTPUTS.items()}
    out["pred"] = logits.argmax(1).long()
    return out
