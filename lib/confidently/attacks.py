"""Attacks that measure robustness, by name: ``pgd`` (this library's, :mod:`confidently.adversarial`) and
AutoAttack (Croce & Hein, 2020) and its parts through torchattacks: ``apgd-ce``, ``apgd-t``, ``fab-t``,
``square`` and ``autoattack`` (the four in sequence, each on the points the ones before did not break:
RobustBench's standard version). A new attack is one class registered here with :func:`register_attack`.

Every attack takes pixels in [0, 1] (normalisation lives inside the model, as torchattacks expects), runs on
the model's device with the model in eval mode (its mode restored afterwards), and returns adversarial images
inside the eps ball (ℓ2 or ℓ∞) and [0, 1], batch by batch; a CUDA out-of-memory error halves the batch. A suite
with ``autocast`` runs every attack's passes in mixed precision (:class:`~confidently.adversarial.MixedPrecision`:
fp32 logits, losses and pixel gradients); what the attacks' examples do to the model is measured in fp32.

Randomness, and why batch size can matter:

* ``pgd`` draws each record's random starts from its own generator seeded by (seed, id): a record's result
  does not depend on the batch it is in, so numbers are the same for any ``--batch-size`` or shard.
* the torchattacks attacks draw random numbers for a whole batch from torch's global RNG (they reseed it
  themselves). Each batch runs inside a fork of that RNG (:func:`torch.random.fork_rng`: the caller's RNG is
  untouched), seeded from (seed, attack, the ids of the batch's records): the same run twice gives identical
  numbers, but a record's result can change with the records that share its batch, that is with
  ``--batch-size``, ``--shard`` or the data order. Compare their numbers at one batch size.

torchattacks is an optional backend, imported only when one of its attacks runs; without it they raise
:class:`~confidently.errors.MissingBackend` naming the install command (``--no-deps``: its pins of old
requests/tqdm would downgrade the environment).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import ClassVar

import torch
from torch import nn

from confidently.adversarial import PGDConfig, get_constraint, pgd_attack, with_autocast
from confidently.errors import MissingBackend, UsageError
from confidently.registry import Registry
from confidently.run import derive_seed, record_generator, with_batch_backoff

ATTACKS: Registry[type[RobustnessAttack]] = Registry("attack")
list_attacks = ATTACKS.names

TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks"


def register_attack(name: str):
    def wrap(cls: type[RobustnessAttack]) -> type[RobustnessAttack]:
        cls.name = name
        return ATTACKS.register(name)(cls)

    return wrap


def parse_attacks(text: str) -> tuple[str, ...]:
    """``pgd,autoattack`` → ``("pgd", "autoattack")``: known names, each once, at least one."""
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    if not names:
        raise UsageError(f"--attack {text!r}: name at least one of {', '.join(list_attacks())}")
    for name in names:
        ATTACKS.get(name)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"--attack names {', '.join(repeated)} twice")
    return names


@dataclass(frozen=True)
class AttackSuite:
    """The attacks run at one radius, in order, with their settings. A point is robust under the suite only
    if no attack broke it (the worst case).

    ``pgd`` carries the threat model (constraint, eps) and PGD's own settings; ``steps`` are the iterations
    of APGD-CE, APGD-T and FAB-T, ``targets`` the target classes of APGD-T and FAB-T (at most classes − 1),
    ``queries`` Square's budget. The defaults are AutoAttack's standard ones. ``autocast`` (bf16, fp16;
    :func:`~confidently.adversarial.mixed_precision` gives ``--amp``'s) runs the attacks in mixed precision.
    """

    names: tuple[str, ...] = ("pgd",)
    pgd: PGDConfig = field(default_factory=PGDConfig)
    steps: int = 100
    targets: int = 9
    queries: int = 5000
    autocast: torch.dtype | None = None

    def __post_init__(self):
        for name in self.names:
            ATTACKS.get(name)
        if not self.names:
            raise UsageError("an attack suite needs at least one attack")
        for what, value in (("attack steps", self.steps), ("target classes", self.targets),
                            ("queries", self.queries)):
            if value < 1:
                raise UsageError(f"{what} must be >= 1, got {value}")

    @property
    def constraint(self) -> str:
        return self.pgd.constraint

    @property
    def eps(self) -> float:
        return self.pgd.eps

    @property
    def per_record(self) -> bool:
        """Whether every attack's result for a record is independent of the other records in its batch."""
        return all(ATTACKS.get(name).per_record for name in self.names)

    def settings(self) -> dict[str, int]:
        """The settings of the non-PGD attacks that shape the result (for records)."""
        used = {key for name in self.names for key in ATTACKS.get(name).uses}
        values = {"aa_steps": self.steps, "aa_targets": self.targets, "queries": self.queries}
        return {key: value for key, value in values.items() if key in used}

    def build(self, num_classes: int) -> list[RobustnessAttack]:
        """The attacks, ready to run against a model with ``num_classes`` outputs (checks what they need)."""
        return [ATTACKS.get(name)(self, num_classes) for name in self.names]


class RobustnessAttack:
    """One attack: adversarial images for a batch (N×C×H×W in [0, 1], on the model's device).

    ``per_record``: a record's result depends only on (seed, id), not on its batch. ``uses``: the suite
    settings (record field names) that shape the attack beyond eps.
    """

    name: ClassVar[str]
    per_record: ClassVar[bool] = False
    targetable: ClassVar[bool] = False
    uses: ClassVar[tuple[str, ...]] = ()

    def __init__(self, suite: AttackSuite, num_classes: int):
        self.suite, self.num_classes = suite, num_classes

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str],
                 seed: int, *, targeted: bool = False) -> torch.Tensor:
        raise NotImplementedError


def attack_rows(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str],
                attack: PGDConfig, seed: int, *, targeted: bool = False,
                autocast: torch.dtype | None = None) -> torch.Tensor:
    """PGD examples of one batch (on its device). Each row's random starts come from (seed, id), so a
    row's result does not depend on its batch; the batch is split in halves on CUDA out-of-memory.
    ``autocast``: mixed precision (:func:`~confidently.adversarial.pgd_attack`)."""
    def run(size: int) -> torch.Tensor:
        out = []
        for start in range(0, len(ids), size):
            rows = slice(start, start + size)
            generators = [record_generator(seed, record_id) for record_id in ids[rows]]
            out.append(pgd_attack(model, images[rows], labels[rows], attack, generator=generators, targeted=targeted,
                                  autocast=autocast))
        return torch.cat(out) if out else images[:0].clone()

    return with_batch_backoff(run, max(1, len(ids)))[0]


@register_attack("pgd")
class PGD(RobustnessAttack):
    """Projected gradient descent (:func:`~confidently.adversarial.pgd_attack`), random starts per record."""

    per_record = True
    targetable = True

    def __call__(self, model, images, labels, ids, seed, *, targeted=False):
        return attack_rows(model, images, labels, ids, self.suite.pgd, seed, targeted=targeted,
                           autocast=self.suite.autocast)


def load_torchattacks(attack: str) -> ModuleType:
    """The torchattacks module, or :class:`MissingBackend` with the command that installs it."""
    try:
        import torchattacks
    except ImportError:
        raise MissingBackend(f"attack {attack!r} needs torchattacks, which is not installed here: "
                             f"{TORCHATTACKS_INSTALL} (--no-deps: its pins of old requests and tqdm would "
                             "downgrade this environment; `make venv` installs it that way)") from None
    return torchattacks


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """torch's global RNG (CPU and the initialised CUDA devices) seeded with ``seed`` inside, restored after."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class TorchAttack(RobustnessAttack):
    """An attack from torchattacks: batch seeds from (seed, name, ids), the global RNG forked around it, the
    result projected onto the ball and [0, 1] (torchattacks' own projection can leave float dust)."""

    NORMS: ClassVar[dict[str, str]] = {"l2": "L2", "linf": "Linf"}
    min_classes: ClassVar[int] = 2

    def __init__(self, suite: AttackSuite, num_classes: int):
        super().__init__(suite, num_classes)
        if suite.constraint not in self.NORMS:
            raise UsageError(f"attack {self.name!r} works in {' and '.join(self.NORMS)}, not {suite.constraint}")
        if num_classes < self.min_classes:
            raise UsageError(f"attack {self.name!r} needs a model with at least {self.min_classes} classes "
                             f"(this one has {num_classes})")
        self.torchattacks = load_torchattacks(self.name)

    @property
    def norm(self) -> str:
        return self.NORMS[self.suite.constraint]

    @property
    def targets(self) -> int:
        return min(self.suite.targets, self.num_classes - 1)

    def build(self, model: nn.Module, seed: int):
        """The torchattacks attack for one batch."""
        raise NotImplementedError

    def __call__(self, model, images, labels, ids, seed, *, targeted=False):
        if targeted:
            raise UsageError(f"attack {self.name!r} is untargeted here (targeted attacks: pgd)")
        if self.suite.eps == 0:
            return images.detach().clone()

        def run(size: int) -> torch.Tensor:
            out = [self._batch(model, images[s:s + size], labels[s:s + size], ids[s:s + size], seed)
                   for s in range(0, len(ids), size)]
            return torch.cat(out) if out else images[:0].clone()

        return with_batch_backoff(run, max(1, len(ids)))[0]

    def _batch(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str],
               seed: int) -> torch.Tensor:
        batch_seed = derive_seed(seed, self.name, *ids)
        was_training = model.training
        model.eval()
        try:
            # the library never writes to stdout: anything torchattacks prints goes to stderr
            with seeded_global_rng(batch_seed), contextlib.redirect_stdout(sys.stderr):
                attack = self.build(with_autocast(model, self.suite.autocast), batch_seed)
                adversarial = attack(images.detach(), labels.detach()).detach()
        finally:
            model.train(was_training)
        delta = get_constraint(self.suite.constraint).project(adversarial - images, self.suite.eps)
        return (images + delta).clamp(0, 1)


@register_attack("apgd-ce")
class APGDCE(TorchAttack):
    """APGD on the cross-entropy loss, one run from a random start."""

    uses = ("aa_steps",)

    def build(self, model, seed):
        return self.torchattacks.APGD(model, norm=self.norm, eps=self.suite.eps, steps=self.suite.steps,
                                      n_restarts=1, seed=seed, loss="ce", rho=0.75)


@register_attack("apgd-t")
class APGDT(TorchAttack):
    """Targeted APGD on the DLR loss, once per target class (the top ``targets`` other classes)."""

    uses = ("aa_steps", "aa_targets")
    min_classes = 4  # the targeted DLR loss reads the 4th-largest logit

    def build(self, model, seed):
        attack = self.torchattacks.APGDT(model, norm=self.norm, eps=self.suite.eps, steps=self.suite.steps,
                                         n_restarts=1, seed=seed, rho=0.75, n_classes=self.num_classes)
        attack.n_target_classes = self.targets
        return attack


@register_attack("fab-t")
class FABT(TorchAttack):
    """Targeted FAB (minimum-norm), once per target class; counts only examples within eps."""

    uses = ("aa_steps", "aa_targets")

    def build(self, model, seed):
        attack = self.torchattacks.FAB(model, norm=self.norm, eps=self.suite.eps, steps=self.suite.steps,
                                       n_restarts=1, seed=seed, multi_targeted=True, n_classes=self.num_classes)
        attack.n_target_classes = self.targets
        return attack


@register_attack("square")
class Square(TorchAttack):
    """Square Attack: random search on the margin loss, no gradients (sees through masked gradients)."""

    uses = ("queries",)

    def build(self, model, seed):
        return self.torchattacks.Square(model, norm=self.norm, eps=self.suite.eps, n_queries=self.suite.queries,
                                        n_restarts=1, p_init=0.8, loss="margin", resc_schedule=True, seed=seed)


@register_attack("autoattack")
class AutoAttack(RobustnessAttack):
    """AutoAttack, standard version: APGD-CE, APGD-T, FAB-T and Square in sequence, each on the points that
    the model still classifies correctly; a point keeps the first example that breaks it."""

    PARTS: ClassVar[tuple[str, ...]] = ("apgd-ce", "apgd-t", "fab-t", "square")
    uses = ("aa_steps", "aa_targets", "queries")

    def __init__(self, suite: AttackSuite, num_classes: int):
        super().__init__(suite, num_classes)
        self.parts = [ATTACKS.get(name)(suite, num_classes) for name in self.PARTS]

    def __call__(self, model, images, labels, ids, seed, *, targeted=False):
        if targeted:
            raise UsageError("attack 'autoattack' is untargeted here (targeted attacks: pgd)")
        adversarial = images.detach().clone()
        if self.suite.eps == 0:
            return adversarial
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                robust = model(images).argmax(1) == labels
            for part in self.parts:
                rows = robust.nonzero().flatten()
                if not len(rows):
                    break
                candidate = part(model, images[rows], labels[rows], [ids[i] for i in rows.tolist()], seed)
                with torch.no_grad():
                    broken = model(candidate).argmax(1) != labels[rows]
                adversarial[rows[broken]] = candidate[broken]
                robust[rows[broken]] = False
        finally:
            model.train(was_training)
        return adversarial
