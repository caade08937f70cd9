import pytest
import torch
from confidently.errors import UsageError
from confidently.unadversarial import (
    PatchConfig,
    Placement,
    composite,
    evaluate_arms,
    init_patches,
    patch_side,
    train_patches,
)


@pytest.fixture(scope="module")
def digits_model(trained_resnet):
    return trained_resnet


def test_composite_identity_exact_centre_and_bounds():
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    patches = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    still = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 3)  # no rotation, scale 1, centred
    out = composite(images, patches, still)
    assert torch.allclose(out[:, :, 6:10, 6:10], patches, atol=1e-6)
    assert torch.equal(out[:, :, :6], images[:, :, :6]) and torch.equal(out[:, :, 10:], images[:, :, 10:])
    tiny = composite(images, patches, torch.tensor([[0.0, 1e-6, 0.0, 0.0]] * 3))  # the mask shrinks to nothing
    assert torch.allclose(tiny, images, atol=1e-4)
    moved = composite(images, torch.ones(3, 3, 4, 4), torch.tensor([[30.0, 1.1, 0.3, -0.3]] * 3))
    assert moved.min() >= 0 and moved.max() <= 1


def test_placements_are_reproducible_and_inside_the_region():
    where = Placement(mode="region", region=(0.5, 0.0, 1.0, 1.0))
    a = where.sample(200, torch.Generator().manual_seed(3))
    assert torch.equal(a, where.sample(200, torch.Generator().manual_seed(3)))
    assert (a[:, 2] >= 0).all() and (a[:, 2] <= 0.5).all() and (a[:, 0].abs() <= 45).all()
    with pytest.raises(UsageError, match="region"):
        Placement(mode="region", region=(0.6, 0, 0.5, 1))
    with pytest.raises(UsageError, match="does not fit"):
        patch_side(32, 32, 40, None)
    assert patch_side(224, 224, None, 0.05) == 50


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).double()
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    patch = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    still = torch.tensor([[0.0, 1.0, 0.0, 0.0]] * 2)
    loss = torch.nn.functional.cross_entropy(model(composite(images, patch, still)), torch.tensor([1, 2]))
    (grad,) = torch.autograd.grad(loss, patch)
    bumped = patch.detach().clone()
    bumped[0, 1, 2, 2] += 1e-6
    with torch.no_grad():
        higher = torch.nn.functional.cross_entropy(model(composite(images, bumped, still)), torch.tensor([1, 2]))
    numeric = (higher - loss.detach()) / 1e-6
    assert abs(float(numeric) - float(grad[0, 1, 2, 2])) <= 1e-2 * abs(float(grad[0, 1, 2, 2])) + 1e-9


def test_sign_steps_keep_patches_in_range_and_absent_classes_unchanged(digits_model, digits_tensors):
    (images, labels), _ = digits_tensors
    keep = labels < 5  # classes 5-9 never appear
    start = init_patches(10, 3, 8, torch.Generator().manual_seed(0))
    patches, losses = train_patches(digits_model, images[keep], labels[keep], start, Placement(),
                                    PatchConfig(steps=20, batch_size=32, lr=0.05), torch.Generator().manual_seed(1))
    assert patches.min() >= 0 and patches.max() <= 1 and patches.shape == start.shape
    assert torch.equal(patches[5:], start[5:]) and not torch.equal(patches[:5], start[:5])
    assert len(losses) == 20


def test_a_trained_patch_beats_a_random_one(digits_model, digits_tensors):
    (train_images, train_labels), (images, labels) = digits_tensors
    where = Placement()
    start = init_patches(10, 3, 10, torch.Generator().manual_seed(0))
    patches, losses = train_patches(digits_model, train_images, train_labels, start, where,
                                    PatchConfig(steps=120, batch_size=64, lr=0.02), torch.Generator().manual_seed(1))
    rows = evaluate_arms(digits_model, images, labels, {"random": start, "unadv": patches}, where,
                         ["gaussian_noise", "contrast"], [2], seed=5)
    acc = {(r["arm"], r["corruption"]): r["acc"] for r in rows}
    for corruption in ("clean", "gaussian_noise", "contrast"):
        assert acc[("unadv", corruption)] > acc[("random", corruption)]
    again = evaluate_arms(digits_model, images, labels, {"unadv": patches}, where, ["contrast"], [2], seed=5)
    assert [r["acc"] for r in again] == [acc[("unadv", "clean")], acc[("unadv", "contrast")]]
