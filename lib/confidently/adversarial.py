"""Projected gradient descent (PGD) in an ℓ2 or ℓ∞ ball, for attacks and adversarial training.

The attack runs with the model in eval mode (batch-norm statistics untouched, the mode
restored afterwards) and only takes gradients with respect to the input. Inputs are pixels
in [0, 1]; normalisation lives inside the model, so eps is in pixel units. A new threat
model is one :class:`Constraint` registered by name.

Defaults follow the thesis and the robustness library: training uses 3 steps of 2·eps/3
from δ = 0 and keeps the highest-loss iterate; evaluation uses 20 (or 100) steps of
2.5·eps/steps.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from confidently.errors import UsageError

_CONSTRAINTS: dict[str, type[Constraint]] = {}


def register_constraint(name: str):
    def wrap(cls: type[Constraint]) -> type[Constraint]:
        _CONSTRAINTS[name] = cls
        cls.name = name
        return cls

    return wrap


def list_constraints() -> list[str]:
    return sorted(_CONSTRAINTS)


def get_constraint(name: str) -> Constraint:
    if name not in _CONSTRAINTS:
        raise UsageError(f"unknown norm {name!r}; choose {' or '.join(list_constraints())}")
    return _CONSTRAINTS[name]()


class Constraint:
    """A threat model: how to start, step and project a perturbation δ (N×C×H×W)."""

    name: ClassVar[str]

    def random_start(self, shape: torch.Size, eps: float, generator: torch.Generator | None, device) -> torch.Tensor:
        raise NotImplementedError

    def step(self, delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        raise NotImplementedError

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example scalars shaped to broadcast over ``like`` (N×...)."""
    return values.view(-1, *([1] * (like.ndim - 1)))


@register_constraint("l2")
class L2(Constraint):
    def random_start(self, shape, eps, generator, device):
        direction = torch.randn(shape, generator=generator).to(device)
        radius = torch.rand(shape[0], generator=generator).to(device)
        unit = direction / _per_example(direction.flatten(1).norm(dim=1) + 1e-10, direction)
        return unit * _per_example(radius, direction) * eps

    def step(self, delta, grad, step_size):
        return delta + step_size * grad / _per_example(grad.flatten(1).norm(dim=1) + 1e-10, grad)

    def project(self, delta, eps):
        norms = delta.flatten(1).norm(dim=1)
        return delta * _per_example(torch.clamp(eps / (norms + 1e-12), max=1.0), delta)

    def norm(self, delta):
        return delta.flatten(1).norm(dim=1)


@register_constraint("linf")
class Linf(Constraint):
    def random_start(self, shape, eps, generator, device):
        return ((torch.rand(shape, generator=generator) * 2 - 1) * eps).to(device)

    def step(self, delta, grad, step_size):
        return delta + step_size * grad.sign()

    def project(self, delta, eps):
        return delta.clamp(-eps, eps)

    def norm(self, delta):
        return delta.flatten(1).abs().amax(dim=1)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_expression(text: str | float, **names: float) -> float:
    """A number such as ``8/255`` or an expression in named values such as ``2*eps/3`` — parsed, never eval'd."""
    if isinstance(text, (int, float)):
        return float(text)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return float(names[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(node)

    try:
        return walk(ast.parse(str(text).strip(), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError):
        allowed = f" in {', '.join(names)}" if names else ""
        raise UsageError(f"{text!r} is not a number or an arithmetic expression{allowed} "
                         "(e.g. 8/255, 2*eps/3)") from None


@dataclass(frozen=True)
class PGDConfig:
    """One attack: ``step_size`` may be an expression in ``eps`` and ``steps``."""

    constraint: str = "l2"
    eps: float = 0.5
    steps: int = 20
    step_size: str | float = "2.5*eps/steps"
    random_start: bool = False
    use_best: bool = True
    restarts: int = 0

    def __post_init__(self):
        if self.eps < 0:
            raise UsageError(f"eps must be >= 0, got {self.eps}")
        if self.steps < 0:
            raise UsageError(f"steps must be >= 0, got {self.steps}")
        if self.eps > 0 and self.steps == 0:
            raise UsageError(f"eps = {self.eps} with 0 steps attacks nothing; give --steps >= 1 (or eps 0)")
        if self.restarts < 0:
            raise UsageError(f"restarts must be >= 0, got {self.restarts}")
        get_constraint(self.constraint)

    @property
    def alpha(self) -> float:
        return evaluate_expression(self.step_size, eps=self.eps, steps=max(self.steps, 1))

    @classmethod
    def training(cls, constraint: str, eps: float, steps: int = 3, step_size: str | float = "2*eps/3",
                 **kwargs) -> PGDConfig:
        """The thesis's training attack (App. B.1.1)."""
        return cls(constraint=constraint, eps=eps, steps=steps, step_size=step_size, **kwargs)

    @classmethod
    def evaluation(cls, constraint: str, eps: float, steps: int = 20, step_size: str | float = "2.5*eps/steps",
                   **kwargs) -> PGDConfig:
        """The robustness library's evaluation attack (20 or 100 steps)."""
        return cls(constraint=constraint, eps=eps, steps=steps, step_size=step_size, **kwargs)


def _loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    losses = F.cross_entropy(model(images), labels, reduction="none")
    return -losses if targeted else losses


def pgd_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig, *,
               generator: torch.Generator | None = None, init: torch.Tensor | None = None,
               targeted: bool = False) -> torch.Tensor:
    """Adversarial examples for ``images`` (N×C×H×W in [0, 1]) within ``config``'s ball and [0, 1].

    ``targeted`` moves towards ``labels`` instead of away from them. ``init`` is a starting
    perturbation (e.g. random starts drawn per record); otherwise random starts come from
    ``generator``. Restarts run as one batch; for each example the first restart that fools
    the model wins, otherwise the one with the highest loss.
    """
    if config.eps == 0 or config.steps == 0:
        return images.detach().clone()
    constraint = get_constraint(config.constraint)
    runs = max(1, config.restarts)
    random_start = config.random_start or config.restarts > 0
    x = images.detach().repeat(runs, 1, 1, 1) if runs > 1 else images.detach()
    y = labels.repeat(runs) if runs > 1 else labels
    was_training = model.training
    model.eval()
    try:
        if init is not None and runs == 1:
            delta = constraint.project(init.to(x.device), config.eps)
        elif random_start:
            delta = constraint.random_start(x.shape, config.eps, generator, x.device)
        else:
            delta = torch.zeros_like(x)
        adversarial = (x + delta).clamp(0, 1)
        if config.use_best:
            best, best_loss = adversarial.clone(), torch.full((len(x),), -float("inf"), device=x.device)
        alpha = config.alpha
        for _ in range(config.steps):
            adversarial.requires_grad_(True)
            losses = _loss(model, adversarial, y, targeted)
            grad, = torch.autograd.grad(losses.sum(), adversarial)
            with torch.no_grad():
                adversarial = adversarial.detach()
                if config.use_best:
                    improved = losses.detach() > best_loss
                    best_loss = torch.where(improved, losses.detach(), best_loss)
                    best[improved] = adversarial[improved]
                delta = constraint.project(constraint.step(adversarial - x, grad, alpha), config.eps)
                adversarial = (x + delta).clamp_(0, 1)
        with torch.no_grad():
            if config.use_best:
                losses = _loss(model, adversarial, y, targeted)
                improved = losses > best_loss
                best[improved] = adversarial[improved]
                adversarial = best
            if runs > 1:
                adversarial = _pick_restart(model, adversarial, y, _loss(model, adversarial, y, targeted), runs,
                                            targeted)
    finally:
        model.train(was_training)
    return adversarial.detach()


def _pick_restart(model: nn.Module, candidates: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor, runs: int,
                  targeted: bool) -> torch.Tensor:
    """Per example: the first restart that succeeded, else the one with the highest loss."""
    count = len(candidates) // runs
    predictions = model(candidates).argmax(1)
    success = ((predictions == labels) if targeted else (predictions != labels)).view(runs, count)
    first_success = success.to(torch.uint8).argmax(0)
    highest_loss = losses.view(runs, count).argmax(0)
    chosen = torch.where(success.any(0), first_success, highest_loss)
    index = torch.arange(count, device=chosen.device)
    return candidates.view(runs, count, *candidates.shape[1:])[chosen, index]


class AdversarialPerturb:
    """The training hook: replaces a batch by PGD examples (used by ``train_classifier``).

    Random starts draw from the training loop's generator, so a resumed run repeats them.
    """

    def __init__(self, config: PGDConfig):
        self.config = config

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return pgd_attack(model, images, labels, self.config, generator=generator)
