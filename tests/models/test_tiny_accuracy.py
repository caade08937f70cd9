"""The tiny architectures reach >90 % on demo:digits on a CPU (the fixtures every tool's tests use)."""

import time

import pytest
import torch
from confidently.data.dataset import ImageDataset
from confidently.models import create_model
from confidently.training import TrainConfig, evaluate_accuracy, train_classifier


def test_tiny_resnet_over_90_percent(trained_resnet, digits_tensors):
    _, test = digits_tensors
    assert evaluate_accuracy(trained_resnet, *test) > 0.9


@pytest.mark.slow
def test_tiny_vit_over_90_percent(digits_tensors):
    train, test = digits_tensors
    torch.manual_seed(0)
    model = create_model("tiny_vit", 10)
    started = time.perf_counter()
    train_classifier(model, ImageDataset.from_tensors(*train), TrainConfig(**VIT_RECIPE))
    accuracy = evaluate_accuracy(model, *test)
    print(f"tiny_vit: {accuracy:.3f} in {time.perf_counter() - started:.0f} s")
    assert accuracy > 0.9


VIT_RECIPE = {"epochs": 36, "lr": 1e-3, "batch_size": 64}
