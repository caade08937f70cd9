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


def test_every_imagenet_c_corruption_is_registered():
    import imagecorruptions

    assert set(list_corruptions()) == set(imagecorruptions.get_corruption_names("all"))


@pytest.mark.parametrize("name", ["gaussian_blur", "contrast", "brightness", "fog"])
def test_batched_versions_match_the_reference_within_one_percent(photos, name):
    from confidently.data.corruptions import reference_corrupt

    seeds = [11, 12, 13, 14]
    for severity in range(1, 6):
        ours = corrupt(photos, name, severity, seeds=seeds)
        reference = reference_corrupt(photos, severity, seeds, name=name)
        assert float((ours - reference).abs().max()) <= 0.01, (name, severity)


def test_batched_gaussian_noise_has_the_reference_spread():
    from confidently.data.corruptions import reference_corrupt

    grey = torch.full((1, 3, 256, 256), 0.5)
    for severity in range(1, 6):
        ours = float((corrupt(grey, "gaussian_noise", severity, seeds=[3]) - grey).std())
        reference = float((reference_corrupt(grey, severity, [3], name="gaussian_noise") - grey).std())
        assert abs(ours - reference) <= 0.01 * reference, (severity, ours, reference)


def test_contrast_keeps_a_red_image_red():
    red = torch.zeros(1, 3, 32, 32)
    red[:, 0] = 1.0
    out = corrupt(red, "contrast", 3)
    assert torch.equal(out[:, 1:], torch.zeros_like(out[:, 1:])) and bool((out[:, 0] == 1).all())


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "snow", "fog"])
def test_an_images_corruption_depends_on_its_seed_not_its_batch(photos, name):
    import numpy as np

    before = np.random.get_state()[1].copy()
    pair = corrupt(photos[:2], name, 3, seeds=[7, 8])
    alone = corrupt(photos[1:2], name, 3, seeds=[8])
    assert torch.equal(pair[1:], alone) and not torch.equal(pair[0], corrupt(photos[:1], name, 3, seeds=[9])[0])
    assert np.array_equal(np.random.get_state()[1], before)  # NumPy's global stream is left as it was


def test_grey_and_small_images_keep_their_shape():
    grey = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("snow", "frost", "motion_blur", "contrast"):
        out = corrupt(grey, name, 2)
        assert out.shape == grey.shape and not torch.equal(out, grey)
