"""PGD invariants (spec advtrain §4.1)."""

import pytest
import torch
import torch.nn.functional as F
from confidently.adversarial import (
    MixedPrecision,
    PGDConfig,
    evaluate_expression,
    get_constraint,
    mixed_precision,
    pgd_attack,
)
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


def _success(model, adversarial, labels):
    with torch.no_grad():
        return int((model(adversarial).argmax(1) != labels).sum())


@pytest.mark.parametrize(("constraint", "eps"), [("l2", 0.5), ("linf", 0.03)])
def test_bf16_attack_succeeds_as_often_as_the_fp32_attack(trained_resnet, digits_tensors, constraint, eps):
    (_, (images, labels)) = digits_tensors
    images, labels = images[:200], labels[:200]
    config = PGDConfig.evaluation(constraint, eps, 10)
    fp32 = pgd_attack(trained_resnet, images, labels, config)
    bf16 = pgd_attack(trained_resnet, images, labels, config, autocast=torch.bfloat16)
    fooled32, fooled16 = _success(trained_resnet, fp32, labels), _success(trained_resnet, bf16, labels)
    assert 0.1 * len(labels) < fooled32 < 0.9 * len(labels)  # a radius where the comparison means something
    assert abs(fooled16 - fooled32) <= max(1, 0.01 * len(labels))  # within 1 point, or one example
    assert not torch.equal(bf16, fp32)  # the passes really ran in bf16
    assert get_constraint(constraint).norm(bf16 - images).max() <= eps + 1e-5 and 0 <= bf16.min() <= bf16.max() <= 1
    assert bf16.dtype == torch.float32 and bf16.stride() == images.stride()  # fp32, in the caller's layout


class Sharp(nn.Module):
    """A model made very confident: its logits multiplied, so most examples' loss gradients are below fp16's range."""

    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def _pixel_gradients(model, images, labels):
    pixels = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(pixels), labels, reduction="none")
    return torch.autograd.grad(loss.sum(), pixels)[0].flatten(1)


def test_fp16_gradients_are_scaled_per_example_instead_of_underflowing(trained_resnet, batch):
    images, labels = batch
    model = Sharp(trained_resnet, 8.0).eval()
    exact = _pixel_gradients(model, images, labels)
    pixels = images.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(pixels)
    plain = torch.autograd.grad(F.cross_entropy(logits.float(), labels, reduction="none").sum(), pixels)[0].flatten(1)
    scaled = _pixel_gradients(MixedPrecision(model, torch.float16), images, labels)
    lost = (plain.abs().amax(1) == 0) & (exact.abs().amax(1) > 0)
    assert lost.sum() >= 5  # plain fp16 autocast loses these examples' gradients: the attack would stall on them

    def unit(g):
        return g / g.abs().amax(1, keepdim=True)

    assert (scaled.abs().amax(1) > 0).all()
    assert F.cosine_similarity(unit(scaled[lost]), unit(exact[lost]), dim=1).min() > 0.9
    largest = exact.abs().amax(1, keepdim=True)  # (norms of gradients this small would underflow in fp32)
    ratio = (scaled / largest).norm(dim=1) / (exact / largest).norm(dim=1)  # the scale is undone at the pixels
    assert ((ratio > 0.5) & (ratio < 2)).all()


def test_mixed_precision_wrapper_leaves_the_modes_of_the_model_alone():
    model = create_model("tiny_resnet", 10).train()
    model.net.bn1.eval()  # e.g. batch norm frozen while the rest trains
    wrapped = MixedPrecision(model, torch.bfloat16)
    assert wrapped.training and model.training and not model.net.bn1.training
    assert wrapped(torch.rand(2, 3, 32, 32)).dtype == torch.float32


def test_the_attack_computes_no_weight_gradients(trained_resnet, batch):
    from torch.utils._python_dispatch import TorchDispatchMode

    class BackwardMasks(TorchDispatchMode):
        """The outputs each convolution / batch-norm backward kernel is asked for: (input, weight, bias)."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "convolution_backward" in str(func) or "batch_norm_backward" in str(func):
                masks.add(tuple(args[-1]))
            return func(*args, **(kwargs or {}))

    images, labels = batch
    computed, masks = [], set()
    hooks = [p.register_hook(lambda grad: computed.append(grad)) for p in trained_resnet.parameters()]
    try:
        with BackwardMasks():
            for autocast in (None, torch.bfloat16):
                pgd_attack(trained_resnet, images[:8], labels[:8], PGDConfig("l2", 0.5, 2), autocast=autocast)
    finally:
        for hook in hooks:
            hook.remove()
    assert computed == [] and masks == {(True, False, False)}  # the kernels run for the input's gradient only


def test_amp_means_mixed_precision_on_cuda_only():
    assert mixed_precision("cpu") is None and mixed_precision(torch.device("cpu")) is None
    if torch.cuda.is_available():
        assert mixed_precision("cuda") in (torch.bfloat16, torch.float16)


def test_the_training_hook_carries_amp(batch, monkeypatch):
    import confidently.adversarial as adversarial

    seen = []
    monkeypatch.setattr(adversarial, "mixed_precision", lambda device: torch.bfloat16)
    monkeypatch.setattr(adversarial, "pgd_attack", lambda *args, **kwargs: seen.append(kwargs["autocast"]))
    images, labels = batch
    model = create_model("tiny_resnet", 10)
    adversarial.AdversarialPerturb(PGDConfig("l2", 0.5, 1))(model, images, labels)
    adversarial.AdversarialPerturb(PGDConfig("l2", 0.5, 1), amp=True)(model, images, labels)
    assert seen == [None, torch.bfloat16]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("constraint", "eps"), [("l2", 0.5), ("linf", 0.03)])
def test_amp_on_the_gpu_attacks_as_well_as_fp32(trained_resnet, digits_tensors, constraint, eps):
    import copy

    (_, (images, labels)) = digits_tensors
    model = copy.deepcopy(trained_resnet).cuda().eval()
    images, labels = images[:256].cuda(), labels[:256].cuda()
    autocast = mixed_precision("cuda")
    config = PGDConfig.evaluation(constraint, eps, 10)
    fp32 = pgd_attack(model, images, labels, config)
    amp = pgd_attack(model, images, labels, config, autocast=autocast)
    fooled32, fooled_amp = _success(model, fp32, labels), _success(model, amp, labels)
    assert 0.1 * len(labels) < fooled32 < 0.9 * len(labels)
    assert abs(fooled_amp - fooled32) <= max(1, 0.01 * len(labels))  # within 1 point, or one example
    assert amp.dtype == torch.float32 and amp.stride() == images.stride()  # fp32 pixels back, in NCHW
