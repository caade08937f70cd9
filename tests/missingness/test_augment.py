import torch
from confidently.data.dataset import ImageDataset
from confidently.missingness import MissingnessTraining, make_fill
from confidently.models import token_keep_mask, vit_forward_kept
from confidently.training import TrainConfig, train_classifier


def generators(count, seed):
    """One generator per image, as the training loop passes them."""
    return [torch.Generator().manual_seed(seed * 1000 + i) for i in range(count)]


def test_draws_follow_each_images_generator_not_the_batch():
    hook = MissingnessTraining(make_fill("black"), 32, 32, 4, 0.5)
    images = torch.rand(4, 3, 32, 32) + 0.01
    whole = hook(None, images, torch.zeros(4), generators(4, 3))
    alone = hook(None, images[2:3], torch.zeros(1), generators(4, 3)[2:3])
    assert torch.equal(whole[2:3], alone)


def test_removes_exactly_the_fraction_with_the_fill():
    hook = MissingnessTraining(make_fill("black"), 32, 32, 4, 0.5)
    images = torch.rand(6, 3, 32, 32) + 0.01
    out = hook(None, images, torch.zeros(6), generators(6, 0))
    zeros = (out == 0).all(1).view(6, 8, 4, 8, 4).all(2).all(-1).flatten(1)  # patches set to black
    assert zeros.sum(1).tolist() == [32] * 6


def test_drop_training_runs_kept_tokens_only(vit):
    hook = MissingnessTraining(make_fill("drop"), 32, 32, 4, 0.25)
    images = torch.rand(4, 3, 32, 32)
    assert torch.equal(hook(vit, images, torch.zeros(4), generators(4, 1)), images)
    vit.train()
    try:
        logits = hook.forward(vit, images)
        expected = vit_forward_kept(vit.net, vit.normalize(images), token_keep_mask(hook._visible, 4, "all"))
    finally:
        vit.eval()
    assert torch.allclose(logits, expected, atol=1e-5)
    assert int(token_keep_mask(hook._visible, 4, "all").sum(1)[0]) == 48


def test_augmented_training_fits_a_small_set(resnet):
    import copy

    model = copy.deepcopy(resnet)
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(32) % 2
    images[labels == 1, 0] = 1.0  # class 1: a red image, visible in any half of its patches
    hook = MissingnessTraining(make_fill("black"), 32, 32, 8, 0.5)
    train_set = ImageDataset.from_tensors(images, labels)
    train_classifier(model, train_set, TrainConfig(epochs=12, lr=3e-3, batch_size=8), perturb=hook,
                     forward=hook.forward)
    with torch.no_grad():
        held = hook(model, images, labels, generators(32, 9))
        accuracy = float((model.eval()(held).argmax(1) == labels).float().mean())
    assert accuracy > 0.9
