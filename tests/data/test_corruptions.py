import piq
import pytest
import torch
from confidently.data import corrupt, list_corruptions, open_dataset


@pytest.fixture(scope="module")
def photos():
    data = open_dataset("demo:photos?size=64")
    return torch.stack([data.image(i) for i in range(4)])


def test_the_shared_set_is_there():
    assert {"gaussian_noise", "gaussian_blur", "contrast", "brightness", "fog", "jpeg_compression"} <= set(
        list_corruptions())


@pytest.mark.parametrize("name", list_corruptions())
def test_severity_zero_is_identity_and_outputs_stay_in_range(photos, name):
    assert torch.equal(corrupt(photos, name, 0), photos)
    for severity in range(1, 6):
        out = corrupt(photos, name, severity, torch.Generator().manual_seed(severity))
        assert out.shape == photos.shape and out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, photos)


@pytest.mark.parametrize("name", ["gaussian_noise", "gaussian_blur", "contrast", "fog", "brightness"])
def test_ssim_falls_with_severity(photos, name):
    ssim = [float(piq.ssim(corrupt(photos, name, s, torch.Generator().manual_seed(0)), photos, data_range=1.0))
            for s in range(6)]
    assert all(a > b for a, b in zip(ssim, ssim[1:], strict=False)), ssim


def test_seeded_noise_is_reproducible(photos):
    a = corrupt(photos, "gaussian_noise", 3, torch.Generator().manual_seed(5))
    b = corrupt(photos, "gaussian_noise", 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_unknown_corruption():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(torch.rand(1, 3, 4, 4), "snow-storm", 1)
