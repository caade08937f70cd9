"""Attacks by name (confidently.attacks): PGD and AutoAttack's parts through torchattacks, their worst case,
seeding per batch, and the error without torchattacks."""

import sys

import pytest
import torch
from confidently.adversarial import PGDConfig, get_constraint
from confidently.attacks import ATTACKS, AttackSuite, parse_attacks
from confidently.data.loader import Batch
from confidently.errors import MissingBackend, UsageError
from confidently.evaluation import robustness_tallies
from confidently.training import accuracies
from torch import nn

TORCHATTACKS = ["apgd-ce", "apgd-t", "fab-t", "square", "autoattack"]
SMALL = {"steps": 5, "targets": 2, "queries": 50}  # small budgets: seconds on a CPU


class Quantized(nn.Module):
    """Gradient masking: the input rounded to a few grey levels before the model. Rounding has zero gradient
    everywhere, so gradient attacks see a flat loss; the model behind it is as fragile as before."""

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


@pytest.fixture(scope="module")
def batch(digits_tensors):
    (_, (images, labels)) = digits_tensors
    return images[:48], labels[:48], [f"test/{i}" for i in range(48)]


def batches(images, labels, ids, size):
    for start in range(0, len(ids), size):
        rows = slice(start, start + size)
        yield Batch(images[rows], labels[rows], [{"id": i} for i in ids[rows]])


def robust_accuracy(model, images, labels, adversarial):
    with torch.no_grad():
        return float((model(adversarial).argmax(1) == labels).float().mean())


def run(name, model, batch, constraint="l2", eps=1.0, seed=0, **budget):
    images, labels, ids = batch
    attack, = AttackSuite((name,), PGDConfig.evaluation(constraint, eps, 20), **{**SMALL, **budget}).build(10)
    return attack(model, images, labels, ids, seed)


def test_the_registry_names_pgd_and_autoattack_and_its_parts():
    assert set(ATTACKS.names()) >= {"pgd", *TORCHATTACKS}
    assert parse_attacks("pgd, AutoAttack") == ("pgd", "autoattack")
    with pytest.raises(UsageError, match="unknown attack 'cw'"):
        parse_attacks("pgd,cw")
    with pytest.raises(UsageError, match="twice"):
        parse_attacks("pgd,pgd")
    with pytest.raises(UsageError, match="at least one"):
        parse_attacks(" , ")
    assert AttackSuite(("pgd",)).per_record and not AttackSuite(("pgd", "square")).per_record
    assert AttackSuite(("pgd", "square")).settings() == {"queries": 5000}
    assert AttackSuite(("autoattack",)).settings() == {"aa_steps": 100, "aa_targets": 9, "queries": 5000}


def test_masked_gradients_fool_pgd_but_not_square(trained_resnet, batch):
    """A quantised input masks every gradient: PGD cannot move (robust accuracy stays the clean one) while
    Square, which only reads the model's outputs, breaks most of the same images."""
    images, labels, _ = batch
    masked = Quantized(trained_resnet).eval()
    clean = robust_accuracy(masked, images, labels, images)
    pgd = robust_accuracy(masked, images, labels, run("pgd", masked, batch, "linf", 0.2))
    square = robust_accuracy(masked, images, labels, run("square", masked, batch, "linf", 0.2, queries=200))
    assert clean > 0.9 and pgd == clean
    assert square < pgd - 0.4
    unmasked = robust_accuracy(trained_resnet, images, labels, run("pgd", trained_resnet, batch, "linf", 0.2))
    assert unmasked < 0.1  # the model behind the rounding is not robust at all


def test_autoattack_is_at_least_as_strong_as_pgd_20(trained_resnet, batch):
    images, labels, _ = batch
    pgd = robust_accuracy(trained_resnet, images, labels, run("pgd", trained_resnet, batch, "l2", 1.0))
    autoattack = robust_accuracy(trained_resnet, images, labels,
                                 run("autoattack", trained_resnet, batch, "l2", 1.0, steps=20))
    assert 0.1 < pgd < 0.9  # an eps where the comparison means something
    assert autoattack <= pgd


@pytest.mark.parametrize("constraint", ["l2", "linf"])
@pytest.mark.parametrize("name", TORCHATTACKS)
def test_examples_stay_in_the_ball_and_the_box_and_leave_the_model_as_it_was(trained_resnet, batch, constraint,
                                                                               name):
    images, labels, _ = batch
    eps = 1.0 if constraint == "l2" else 0.1
    trained_resnet.train()
    state = {k: v.clone() for k, v in trained_resnet.state_dict().items()}
    try:
        adversarial = run(name, trained_resnet, (images[:12], labels[:12], batch[2][:12]), constraint, eps,
                          queries=20)
        assert trained_resnet.training
    finally:
        trained_resnet.eval()
    assert all(torch.equal(v, state[k]) for k, v in trained_resnet.state_dict().items())  # BN statistics too
    assert adversarial.shape == images[:12].shape and adversarial.device == images.device
    assert get_constraint(constraint).norm(adversarial - images[:12]).max() <= eps + 1e-5
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert robust_accuracy(trained_resnet, images[:12], labels[:12], adversarial) <= \
        robust_accuracy(trained_resnet, images[:12], labels[:12], images[:12])  # a point once wrong stays wrong


def test_a_batch_is_seeded_by_its_ids_inside_a_fork_of_the_global_rng(trained_resnet, batch):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = run("square", trained_resnet, batch, "linf", 0.05, queries=20)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random numbers are untouched
    torch.manual_seed(7)  # whatever the global state, the batch's own seed decides
    assert torch.equal(run("square", trained_resnet, batch, "linf", 0.05, queries=20), first)
    other = run("square", trained_resnet, batch, "linf", 0.05, queries=20, seed=1)
    assert not torch.equal(other, first)


def test_worst_case_counts_a_point_only_if_no_attack_broke_it(trained_resnet, batch):
    """One pass, several attacks: each attack's tallies, and the worst case below every one of them; at eps 0
    every attack's accuracy is the clean one."""
    images, labels, ids = batch
    masked = Quantized(trained_resnet).eval()
    suites = [AttackSuite(("pgd", "square"), PGDConfig.evaluation("linf", eps, 5), queries=100) for eps in (0, 0.2)]
    at_zero, attacked = robustness_tallies(masked, batches(images, labels, ids, 16), suites, num_classes=10)
    assert set(at_zero) == {"nat", "adv:pgd", "adv:square"} and at_zero["adv:square"] == at_zero["nat"]
    assert set(attacked) == {"nat", "adv", "adv:pgd", "adv:square"}
    worst, each = accuracies(attacked["adv"])[0], [accuracies(attacked[f"adv:{n}"])[0] for n in ("pgd", "square")]
    assert worst <= min(each) and each[1] < each[0]
    for arm in ("adv:pgd", "adv:square"):
        assert all(w <= a for w, a in zip(attacked["adv"]["class_correct"], attacked[arm]["class_correct"],
                                          strict=True))
    only_pgd, = robustness_tallies(masked, batches(images, labels, ids, 16), [suites[1].pgd], num_classes=10)
    assert only_pgd == {"nat": attacked["nat"], "adv": attacked["adv:pgd"]}  # PGD alone: the records of before


def test_apgd_t_needs_four_classes_and_attacks_are_untargeted(trained_resnet):
    with pytest.raises(UsageError, match="at least 4 classes"):
        AttackSuite(("autoattack",), PGDConfig.evaluation("l2", 1.0)).build(3)
    with pytest.raises(UsageError, match="untargeted"):
        square, = AttackSuite(("square",), PGDConfig.evaluation("l2", 1.0)).build(10)
        square(trained_resnet, torch.rand(1, 3, 32, 32), torch.tensor([0]), ["a"], 0, targeted=True)


def test_without_torchattacks_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # `import torchattacks` now fails
    for name in TORCHATTACKS:
        with pytest.raises(MissingBackend, match="pip install --no-deps torchattacks") as error:
            AttackSuite((name,), PGDConfig.evaluation("l2", 1.0)).build(10)
        assert error.value.exit_code == 3
    pgd, = AttackSuite(("pgd",), PGDConfig.evaluation("l2", 1.0)).build(10)  # PGD needs nothing more
    assert pgd.per_record


@pytest.mark.parametrize("name", ["pgd", "apgd-ce"])
def test_a_suite_with_autocast_runs_its_attacks_in_mixed_precision(trained_resnet, digits_tensors, name):
    (_, (images, labels)) = digits_tensors
    images, labels, ids = images[:100], labels[:100], [f"test/{i}" for i in range(100)]
    fp32 = AttackSuite((name,), PGDConfig.evaluation("linf", 0.03, 10), steps=10)
    bf16 = AttackSuite((name,), PGDConfig.evaluation("linf", 0.03, 10), steps=10, autocast=torch.bfloat16)
    trained_resnet.train()
    try:
        exact = fp32.build(10)[0](trained_resnet, images, labels, ids, 0)
        mixed = bf16.build(10)[0](trained_resnet, images, labels, ids, 0)
        assert trained_resnet.training and all(m.training for m in trained_resnet.modules())  # modes restored
    finally:
        trained_resnet.eval()
    assert not torch.equal(mixed, exact) and mixed.dtype == torch.float32
    assert (mixed - images).abs().max() <= 0.03 + 1e-6 and 0 <= mixed.min() <= mixed.max() <= 1
    with torch.no_grad():
        fooled = [int((trained_resnet(x).argmax(1) != labels).sum()) for x in (exact, mixed)]
    assert 10 < fooled[0] < 90 and abs(fooled[1] - fooled[0]) <= 1  # the same strength: within one example of 100
    tallies = robustness_tallies(trained_resnet, batches(images, labels, ids, 100), [bf16], num_classes=10)[0]
    assert sum(tallies["adv"]["class_correct"]) == 100 - fooled[1]  # the same examples, judged by the fp32 model
