"""PGD invariants (spec advtrain §4.1)."""

import pytest
import torch
import torch.nn.functional as F
from confidently.adversarial import PGDConfig, evaluate_expression, get_constraint, pgd_attack
from confidently.errors import UsageError
from confidently.models import create_model
from torch import nn


@pytest.fixture(scope="module")
def batch(digits_tensors):
    (_, (images, labels)) = digits_tensors
    return images[:48], labels[:48]


@pytest.mark.parametrize("constraint", ["l2", "linf"])
@pytest.mark.parametrize("random_start", [False, True])
def test_output_stays_in_ball_and_box(trained_resnet, batch, constraint, random_start):
    images, labels = batch
    for eps, steps, step in [(0.5, 5, "2.5*eps/steps"), (2.0, 3, "2*eps/3"), (0.03, 7, 0.1)]:
        config = PGDConfig(constraint, eps, steps, step, random_start=random_start)
        adv = pgd_attack(trained_resnet, images, labels, config, generator=torch.Generator().manual_seed(0))
        norms = get_constraint(constraint).norm(adv - images)
        assert norms.max() <= eps + (1e-5 if constraint == "l2" else 1e-6)
        assert adv.min() >= 0 and adv.max() <= 1


def test_use_best_never_lowers_the_loss(trained_resnet, batch):
    images, labels = batch
    adv = pgd_attack(trained_resnet, images, labels, PGDConfig("l2", 0.5, 10, use_best=True))
    with torch.no_grad():
        clean = F.cross_entropy(trained_resnet(images), labels, reduction="none")
        attacked = F.cross_entropy(trained_resnet(adv), labels, reduction="none")
    assert (attacked >= clean - 1e-6).all()


@pytest.mark.parametrize("constraint", ["l2", "linf"])
def test_pgd_beats_random_noise_of_the_same_norm(trained_resnet, batch, constraint):
    images, labels = batch
    eps = 1.0 if constraint == "l2" else 0.1
    adv = pgd_attack(trained_resnet, images, labels, PGDConfig(constraint, eps, 10, use_best=False))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    if constraint == "l2":
        scale = (adv - images).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)
        noise = noise * scale.view(-1, 1, 1, 1)
    else:
        noise = noise.sign() * eps
    random = (images + noise).clamp(0, 1)
    with torch.no_grad():
        loss_adv = F.cross_entropy(trained_resnet(adv), labels)
        loss_random = F.cross_entropy(trained_resnet(random), labels)
        loss_clean = F.cross_entropy(trained_resnet(images), labels)
    assert loss_adv > loss_random and loss_adv > 2 * loss_clean


def test_eps_zero_or_no_steps_is_the_identity(trained_resnet, batch):
    images, labels = batch
    assert torch.equal(pgd_attack(trained_resnet, images, labels, PGDConfig("linf", 0.0, 20)), images)


def test_step_lengths():
    l2, linf = get_constraint("l2"), get_constraint("linf")
    grad = torch.randn(4, 3, 8, 8)
    grad[0, 0, 0, 0] = 0
    step = l2.step(torch.zeros_like(grad), grad, 0.3)
    assert torch.allclose(step.flatten(1).norm(dim=1), torch.full((4,), 0.3), atol=1e-6)
    step = linf.step(torch.zeros_like(grad), grad, 0.05)
    assert step[0, 0, 0, 0] == 0 and torch.allclose(step.abs()[grad != 0], torch.tensor(0.05))


def test_mode_and_batch_norm_statistics_untouched(batch):
    model = create_model("tiny_resnet", 10).train()
    images, labels = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd_attack(model, images, labels, PGDConfig("l2", 0.5, 3))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


class Linear2(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([-score, score], dim=1)


def test_l2_attack_on_a_linear_model_moves_against_the_weights():
    torch.manual_seed(0)
    w = torch.randn(48)
    model = Linear2(w, 0.0)
    x = torch.full((1, 3, 4, 4), 0.5)
    adv = pgd_attack(model, x, torch.tensor([1]), PGDConfig("l2", 0.2, 50, 0.05, use_best=False))
    expected = x.flatten() - 0.2 * w / w.norm()
    assert torch.allclose(adv.flatten(), expected, atol=1e-4)


def test_restarts_pick_a_successful_run(trained_resnet, batch):
    images, labels = batch
    single = pgd_attack(trained_resnet, images, labels, PGDConfig("linf", 0.08, 5, random_start=True),
                        generator=torch.Generator().manual_seed(0))
    several = pgd_attack(trained_resnet, images, labels, PGDConfig("linf", 0.08, 5, restarts=4),
                         generator=torch.Generator().manual_seed(0))
    assert several.shape == images.shape and (several - images).abs().max() <= 0.08 + 1e-6
    with torch.no_grad():
        fooled_single = (trained_resnet(single).argmax(1) != labels).float().mean()
        fooled_several = (trained_resnet(several).argmax(1) != labels).float().mean()
    assert fooled_several >= fooled_single


def _fooled(model, adversarial, labels):
    with torch.no_grad():
        return model(adversarial).argmax(1) != labels


def test_first_restart_is_the_zero_start_or_init_and_its_successes_are_kept(trained_resnet, batch):
    images, labels = batch
    config = PGDConfig("linf", 0.03, 3)
    zero = pgd_attack(trained_resnet, images, labels, config)
    assert torch.equal(pgd_attack(trained_resnet, images, labels, PGDConfig("linf", 0.03, 3, restarts=1)), zero)
    init = get_constraint("linf").random_start(images.shape, 0.03, torch.Generator().manual_seed(3), "cpu")
    for start in (None, init):
        single = pgd_attack(trained_resnet, images, labels, config, init=start)
        several = pgd_attack(trained_resnet, images, labels, PGDConfig("linf", 0.03, 3, restarts=3), init=start,
                             generator=torch.Generator().manual_seed(0))
        fooled = _fooled(trained_resnet, single, labels)
        assert 0 < fooled.sum() < len(labels)
        assert torch.equal(several[fooled], single[fooled])  # the δ₀ run's successes stand
        assert (_fooled(trained_resnet, several, labels) >= fooled).all()


def test_restarts_run_one_after_another_within_the_batch(batch):
    model = create_model("tiny_resnet", 10).eval()
    images, labels = batch
    sizes = []
    model.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
    pgd_attack(model, images[:8], labels[:8], PGDConfig("l2", 0.5, 2, restarts=4),
               generator=torch.Generator().manual_seed(0))
    assert sizes and max(sizes) == 8


def test_per_example_generators_make_results_independent_of_the_batch(trained_resnet, batch):
    images, labels = batch
    config = PGDConfig("linf", 0.05, 2, random_start=True, restarts=3)

    def generators(rows):
        return [torch.Generator().manual_seed(1000 + i) for i in rows]

    whole = pgd_attack(trained_resnet, images, labels, config, generator=generators(range(48)))
    parts = torch.cat([pgd_attack(trained_resnet, images[s:s + 7], labels[s:s + 7], config,
                                  generator=generators(range(s, min(s + 7, 48)))) for s in range(0, 48, 7)])
    assert torch.allclose(whole, parts, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"eps": -1.0}, "eps must be >= 0"), ({"constraint": "l3"}, "unknown norm"),
    ({"eps": 0.5, "steps": 0}, "0 steps"),
])
def test_bad_configs(kwargs, words):
    with pytest.raises(UsageError, match=words):
        PGDConfig(**{"constraint": "l2", "eps": 0.5, "steps": 3, **kwargs})


def test_expressions_are_parsed_not_evaluated():
    assert evaluate_expression("8/255") == pytest.approx(8 / 255)
    assert evaluate_expression("2*eps/3", eps=0.75) == pytest.approx(0.5)
    assert evaluate_expression("2.5*eps/steps", eps=1, steps=20) == pytest.approx(0.125)
    with pytest.raises(UsageError):
        evaluate_expression("__import__('os').system('true')")
