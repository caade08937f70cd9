"""Real CUDA out-of-memory errors, provoked by capping this process's share of the GPU: the batch-size back-offs
recover with the results of a batch that fits."""

from __future__ import annotations

import contextlib

import pytest
import torch
from confidently.models import create_model

CAP_GIB = 2.0


@contextlib.contextmanager
def capped(gib: float):
    """This process may allocate at most ``gib`` GiB of the GPU (the caching allocator refuses beyond it)."""
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2 ** 30 / total))
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_training_splits_a_batch_that_does_not_fit(gpu, capsys):
    """A ResNet-50 step on 64 images at 224² needs far more than 2 GiB: it is redone in micro-batches."""
    from confidently.data.dataset import ImageDataset
    from confidently.recipes import TrainConfig
    from confidently.training import train_classifier

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    torch.manual_seed(0)
    model = create_model("resnet50", 10, img_size=224)
    config = TrainConfig(epochs=1, batch_size=64, lr=0.01, schedule="constant")
    with capped(CAP_GIB):
        train_classifier(model, ImageDataset.from_tensors(images, labels), config, device=gpu, workers=0)
    assert "micro-batches" in capsys.readouterr().err
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_forward_backoff_gives_the_predictions_of_a_batch_that_fits(gpu):
    """with_batch_backoff on a real OOM: 1024 images at 224² through a ResNet-50 in 2 GiB, the same classes as
    in batches of 16 (cuDNN may pick other kernels per batch size: logits equal to float round-off)."""
    from confidently.run.device import with_batch_backoff

    torch.manual_seed(0)
    model = create_model("resnet50", 10, img_size=224).to(gpu).eval()
    images = torch.rand(1024, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def logits(size: int) -> torch.Tensor:
        return torch.cat([model(images[i:i + size].to(gpu)).cpu() for i in range(0, len(images), size)])

    with capped(CAP_GIB):
        backed, size = with_batch_backoff(logits, len(images))
    assert size < len(images)
    assert torch.allclose(backed, logits(16), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("fill", ["mean", "drop"])
def test_ablate_logits_back_off(gpu, fill):
    """ablate's MissingnessModel: all 512 rows in one chunk do not fit; the chunks shrink, the logits stay."""
    from confidently.missingness.fills import make_fill
    from confidently.missingness.model import MissingnessModel

    torch.manual_seed(0)
    arch = "vit_base_patch16_224" if fill == "drop" else "resnet50"
    model = create_model(arch, 10, img_size=224).to(gpu).eval()
    images = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(2)).to(gpu)
    rows = torch.arange(512, device=gpu) % 4
    visible = torch.rand(512, 224, 224, generator=torch.Generator().manual_seed(3)).to(gpu) > 0.5
    small = MissingnessModel(model, make_fill(fill), batch_size=16).logits(images, rows, visible)
    with capped(CAP_GIB):
        large = MissingnessModel(model, make_fill(fill), batch_size=512).logits(images, rows, visible)
    assert torch.allclose(large, small, atol=1e-3, rtol=1e-3)
