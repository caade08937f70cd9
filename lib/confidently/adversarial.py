"""Projected gradient descent (PGD) in an ℓ2 or ℓ∞ ball, for attacks and adversarial training.

The attack runs with the model in eval mode (batch-norm statistics untouched, the mode
restored afterwards) and only takes gradients with respect to the input. Inputs are pixels
in [0, 1]; normalisation lives inside the model, so eps is in pixel units. A new threat
model is one :class:`Constraint` registered by name.

Defaults follow the thesis and the robustness library: training uses 3 steps of 2·eps/3
from δ = 0 and keeps the highest-loss iterate; evaluation uses 20 (or 100) steps of
2.5·eps/steps.

Mixed precision (``autocast``): the model's passes run in bf16 or fp16 while the perturbation, the
gradient with respect to the pixels and the loss stay fp32 (:class:`MixedPrecision`).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from confidently.errors import UsageError
from confidently.registry import Registry

CONSTRAINTS: Registry[type[Constraint]] = Registry("norm")
list_constraints = CONSTRAINTS.names


def register_constraint(name: str):
    def wrap(cls: type[Constraint]) -> type[Constraint]:
        cls.name = name
        return CONSTRAINTS.register(name)(cls)

    return wrap


def get_constraint(name: str) -> Constraint:
    return CONSTRAINTS.get(name)()


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
    restarts: int = 0  # runs per example in all, the first from δ₀ (0 and 1: one run); see pgd_attack

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


def mixed_precision(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype ``--amp`` means on ``device``: bf16 where the GPU has it, else fp16; None off CUDA.

    As in training (:class:`~confidently.training.TrainConfig` ``amp``), mixed precision is a CUDA feature: on the
    CPU the attack stays fp32, so ``--amp`` there changes nothing. :func:`pgd_attack` takes any dtype (bf16
    autocast works on the CPU too)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _Scale(torch.autograd.Function):
    """Identity on the fp32 logits; backward rescales each example's gradient to a largest entry in [1, 2) (by
    a power of two, so the pixels' end undoes it exactly). The fp16 backward then starts near 1 however
    confident an example is: a confident example's tiny loss gradient no longer underflows to zero, and
    fp16's overflow (65504) stays far away."""

    @staticmethod
    def forward(ctx, logits, shared):
        ctx.shared = shared
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad):
        largest = grad.flatten(1).abs().amax(1)
        exponent = torch.where(largest > 0, torch.floor(torch.log2(largest)), torch.zeros_like(largest))
        ctx.shared["scale"] = torch.exp2(-exponent)
        return grad * _per_example(ctx.shared["scale"], grad), None


class _Unscale(torch.autograd.Function):
    """Identity on the fp32 pixels; backward divides each example's gradient by the scale :class:`_Scale` chose."""

    @staticmethod
    def forward(ctx, images, shared):
        ctx.shared = shared
        return images.view_as(images)

    @staticmethod
    def backward(ctx, grad):
        return grad / _per_example(ctx.shared["scale"], grad), None


class MixedPrecision(nn.Module):
    """``model`` run under autocast to ``dtype``, its logits returned in fp32 (losses on them are fp32, and so is
    the gradient with respect to fp32 pixels). With fp16 each example's gradient is scaled inside the network
    and unscaled at the pixels (:class:`_Scale`), the per-example form of a gradient scaler; bf16 has fp32's
    range and needs none. Attacks from other libraries take it like any model."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.training = model.training  # its own flag only: train() would reset every submodule's mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scaled = self.dtype == torch.float16 and torch.is_grad_enabled() and images.requires_grad
        shared: dict[str, torch.Tensor] = {}
        inputs = _Unscale.apply(images, shared) if scaled else images
        with torch.autocast(images.device.type, dtype=self.dtype):
            logits = self.model(inputs)
        logits = logits.float()
        return _Scale.apply(logits, shared) if scaled else logits


def with_autocast(model: nn.Module, autocast: torch.dtype | None) -> nn.Module:
    """``model`` itself (fp32) or wrapped in :class:`MixedPrecision`."""
    return model if autocast is None or autocast == torch.float32 else MixedPrecision(model, autocast)


def _prefers_channels_last(model: nn.Module, images: torch.Tensor, autocast: torch.dtype | None) -> bool:
    """Whether the attack's passes should run on channels-last pixels: a network of sliding (overlapping)
    convolutions under autocast, where bf16/fp16 kernels (tensor cores, oneDNN) want that layout, and on the CPU
    in fp32 too, where oneDNN's channels-last convolutions take a PGD pass 1.2-1.4x faster (bench/advtrain_pgd.py;
    other kernels, so the last bits of the numbers differ from a channels-first pass). fp32 on a GPU keeps the
    caller's layout (not measured); a ViT's patchifying convolution gains nothing."""
    fp32 = autocast is None or autocast == torch.float32
    if images.ndim != 4 or (fp32 and images.device.type != "cpu"):
        return False
    return any(isinstance(m, nn.Conv2d) and any(k > s for k, s in zip(m.kernel_size, m.stride, strict=True))
               for m in model.modules())


def _loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    losses = F.cross_entropy(model(images), labels, reduction="none")
    return -losses if targeted else losses


Generators = torch.Generator | Sequence[torch.Generator] | None


def _random_start(constraint: Constraint, shape: torch.Size, eps: float, generator: Generators,
                  device) -> torch.Tensor:
    """One batch draw from a shared generator, or one draw per example from its own generator."""
    if generator is None or isinstance(generator, torch.Generator):
        return constraint.random_start(shape, eps, generator, device)
    return torch.cat([constraint.random_start((1, *shape[1:]), eps, g, device) for g in generator])


def pgd_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig, *,
               generator: Generators = None, init: torch.Tensor | None = None,
               targeted: bool = False, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Adversarial examples for ``images`` (N×C×H×W in [0, 1]) within ``config``'s ball and [0, 1].

    ``targeted`` moves towards ``labels`` instead of away from them. The first run starts from
    ``init`` if given, else from a random start with ``config.random_start``, else from δ₀ = 0.
    ``config.restarts`` = R > 1 adds R − 1 runs from random starts, one after another (memory stays
    that of one batch) and only on the examples not yet fooled: each example keeps the first run
    that fools the model, else its highest-loss one. Random starts come from ``generator``: one for
    the batch (training), or one per example (e.g. seeded by (seed, id)) so that an example's
    result does not depend on the batch it is in. ``autocast`` (bf16, fp16) runs the model's passes in
    mixed precision (:class:`MixedPrecision`; :func:`mixed_precision` gives ``--amp``'s dtype).

    Only the pixels get gradients: ``torch.autograd.grad`` with respect to them runs no weight-gradient
    kernels. The examples come back in the layout of ``images``.
    """
    if config.eps == 0 or config.steps == 0:
        return images.detach().clone()
    constraint = get_constraint(config.constraint)
    x = images.detach()
    if _prefers_channels_last(model, x, autocast):
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    net = with_autocast(model, autocast)
    model.eval()
    try:
        if init is not None:
            start = constraint.project(init.to(x.device), config.eps)
        elif config.random_start:
            start = _random_start(constraint, x.shape, config.eps, generator, x.device)
        else:
            start = torch.zeros_like(x)
        adversarial = _pgd_run(net, x, labels, start, constraint, config, targeted)
        if config.restarts > 1:
            loss, fooled = _outcome(net, adversarial, labels, targeted)
            for _ in range(1, config.restarts):
                active = (~fooled).nonzero().flatten()
                if not len(active):
                    break
                own = generator if generator is None or isinstance(generator, torch.Generator) else \
                    [generator[i] for i in active.tolist()]
                start = _random_start(constraint, x[active].shape, config.eps, own, x.device)
                candidate = _pgd_run(net, x[active], labels[active], start, constraint, config, targeted)
                candidate_loss, candidate_fooled = _outcome(net, candidate, labels[active], targeted)
                better = candidate_fooled | (candidate_loss > loss[active])
                chosen = active[better]
                adversarial[chosen], loss[chosen] = candidate[better], candidate_loss[better]
                fooled[chosen] = candidate_fooled[better]
    finally:
        model.train(was_training)
    return adversarial.detach() if adversarial.stride() == images.stride() else \
        torch.empty_like(images).copy_(adversarial)


def _pgd_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, constraint: Constraint,
             config: PGDConfig, targeted: bool) -> torch.Tensor:
    """One PGD run from perturbation ``start``: the last iterate, or with ``use_best`` the highest-loss one.

    An iterate's loss comes from the pass that computes its gradient; only the last iterate, which takes no
    step, needs a forward of its own to be compared."""
    adversarial = (x + start).clamp_(0, 1)
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
                _keep_better(best, best_loss, adversarial, losses.detach())
            delta = constraint.project(constraint.step(adversarial.sub_(x), grad, alpha), config.eps)
            adversarial = delta.add_(x).clamp_(0, 1)
    if config.use_best:
        with torch.no_grad():
            _keep_better(best, best_loss, adversarial, _loss(model, adversarial, y, targeted))
        return best
    return adversarial


def _keep_better(best: torch.Tensor, best_loss: torch.Tensor, candidate: torch.Tensor, loss: torch.Tensor) -> None:
    """In place: each example's ``best`` becomes ``candidate`` where ``loss`` beats ``best_loss`` (NaN never does)."""
    improved = loss > best_loss
    torch.where(improved, loss, best_loss, out=best_loss)
    torch.where(_per_example(improved, best), candidate, best, out=best)


@torch.no_grad()
def _outcome(model: nn.Module, adversarial: torch.Tensor, labels: torch.Tensor,
             targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the attack's loss and whether it succeeded (fooled, or hit the target)."""
    logits = model(adversarial)
    loss = F.cross_entropy(logits, labels, reduction="none")
    predictions = logits.argmax(1)
    return (-loss, predictions == labels) if targeted else (loss, predictions != labels)


class AdversarialPerturb:
    """The training hook: replaces a batch by PGD examples (used by ``train_classifier``).

    Random starts draw from the generators the training loop passes, one per record seeded by (seed, id,
    epoch), so they do not depend on the batch size or rank and a resumed run repeats them.

    With ``amp`` (the training's ``TrainConfig.amp``) the attack's passes run in mixed precision where the
    training's do, on CUDA (:func:`mixed_precision`).
    """

    adversarial = True  # the training's metrics say accuracy before (train_nat_acc) and after (train_adv_acc) it

    def __init__(self, config: PGDConfig, *, amp: bool = False):
        self.config, self.amp = config, amp

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: Generators = None) -> torch.Tensor:
        return pgd_attack(model, images, labels, self.config, generator=generator,
                          autocast=mixed_precision(images.device) if self.amp else None)
