"""DeiT's mixup/cutmix: per-record draws, targets that sum to one and match the pixels mixed in."""

import pytest
import torch
from confidently.data import ImageDataset
from confidently.errors import UsageError
from confidently.mixing import BatchMix, soft_targets
from confidently.training import TrainConfig, train_classifier


def batch(n=6, size=16):
    images = torch.stack([torch.full((3, size, size), i / n) for i in range(n)])
    return images, torch.arange(n) % 3, [f"r{i}" for i in range(n)]


def test_targets_sum_to_one_and_weigh_the_partner_by_its_share_of_the_pixels():
    images, labels, ids = batch()
    mixed, targets = BatchMix(label_smoothing=0.0)(images, labels, ids, 3, seed=1, epoch=0)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    for i in range(6):
        partner = 5 - i
        if labels[i] == labels[partner]:
            continue
        own = float(targets[i, labels[i]])
        # every image is one flat value: the mixed image's mean is own·x_i + (1 − own)·x_partner, for either mix
        expected = own * images[i].mean() + (1 - own) * images[partner].mean()
        assert float(mixed[i].mean()) == pytest.approx(float(expected), abs=1e-5)


def test_draws_are_per_record_and_per_epoch():
    mix = BatchMix()
    assert mix.draws("a", 3, 0, 32, 32) == mix.draws("a", 3, 0, 32, 32)
    assert len({mix.draws("a", 3, epoch, 32, 32)[0] for epoch in range(5)}) == 5
    kinds = {mix.draws(f"r{i}", 3, 0, 32, 32)[1] is None for i in range(40)}
    assert kinds == {True, False}  # both mixup and cutmix happen
    assert BatchMix(mixup=0.0, cutmix=1.0).draws("a", 3, 0, 32, 32)[1] is not None
    with pytest.raises(UsageError):
        BatchMix(mixup=0.0, cutmix=0.0)


def test_smoothing_spreads_over_every_class():
    targets = soft_targets(torch.tensor([0, 2]), 4, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(2)) and float(targets[0, 0]) == pytest.approx(0.925)


def test_training_with_mixing_repeats_exactly():
    torch.manual_seed(0)
    images = torch.rand(24, 3, 8, 8)
    labels = (images[:, 0].mean((1, 2)) > 0.5).long()
    data = ImageDataset.from_tensors(images, labels)

    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
        model.num_classes = 2
        config = TrainConfig(epochs=2, batch_size=8, mixup=0.8, cutmix=1.0, label_smoothing=0.1, augment="shift-flip")
        return train_classifier(model, data, config, workers=0)

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(),
                                                 strict=True))
