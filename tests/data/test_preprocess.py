import math

import pytest
import torch
from confidently.data.preprocess import PREPROCESS, DataConfig, make_preprocess
from confidently.errors import UsageError
from confidently.models import create_model


def _image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8)


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (224, 224), (60, 90)])
def test_eval_resizes_the_shorter_side_then_crops_the_centre(shape):
    config = DataConfig((224, 224), "bicubic", 0.875)
    out = make_preprocess("eval", config)(_image(*shape))
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8


def test_eval_keeps_the_aspect_ratio():
    """A wide image's centre column survives the crop unsquashed: the crop sees a square of the middle."""
    image = torch.zeros(3, 100, 300, dtype=torch.uint8)
    image[:, :, 140:160] = 255  # a vertical bar in the middle, 20 of 300 px wide
    out = make_preprocess("eval", DataConfig((50, 50), "bilinear", 1.0))(image)
    bright = (out[0].float().mean(0) > 127).sum().item()
    assert 9 <= bright <= 11  # 20 px at scale 1/2; squashing would give 3


def test_eval_at_the_stored_size_with_crop_pct_1_is_the_identity():
    image = _image(32, 32)
    assert torch.equal(make_preprocess("eval", DataConfig((32, 32)))(image), image)


def test_crop_pct_sets_the_resize():
    image = _image(256, 256)
    out = make_preprocess("eval", DataConfig((200, 200), "bilinear", 0.8))(image)  # resized to 250, crop 200
    expected = torch.nn.functional.interpolate(image[None].float(), size=(250, 250), mode="bilinear",
                                               antialias=True, align_corners=False)[0, :, 25:225, 25:225]
    assert (out.float() - expected).abs().max() <= 1.01


@pytest.mark.parametrize("name", ["train", "robustness-imagenet", "deit"])
def test_random_preprocess_depends_only_on_its_generator(name):
    preprocess = make_preprocess(name, DataConfig((64, 64)))
    image = _image(120, 90)
    draws = [preprocess(image, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert draws[0].shape == (3, 64, 64) and torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_deit_runs_every_randaugment_op_on_a_bicubic_models_images():
    """A timm ViT's config says bicubic; RandAugment's rotations and shears on tensors must still run."""
    preprocess = make_preprocess("deit", DataConfig((32, 32), "bicubic", 0.9))
    image = _image(48, 40)
    for seed in range(60):  # 14 ops, two a draw: every one is drawn
        out = preprocess(image, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1


def test_random_resized_crop_boxes_follow_torchvision_bounds():
    crop = make_preprocess("train", DataConfig((32, 32)))
    for seed in range(200):
        top, left, h, w = crop.crop_box(300, 400, torch.Generator().manual_seed(seed))
        assert 0 <= top <= 300 - h and 0 <= left <= 400 - w
        if (h, w) != (300, 400):
            assert 0.08 * 0.9 <= h * w / 120000 <= 1.0 + 1e-9 and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_robustness_imagenet_returns_float_pixels():
    out = make_preprocess("robustness-imagenet", DataConfig((48, 48)))(_image(60, 60), torch.Generator())
    assert out.dtype == torch.float32 and 0 <= float(out.min()) and float(out.max()) <= 1


def test_data_config_comes_from_the_models_architecture():
    vit = DataConfig.of(create_model("vit_tiny_patch16_224", 3))
    assert vit.size == (224, 224) and vit.interpolation == "bicubic" and math.isclose(vit.crop_pct, 0.9)
    tiny = DataConfig.of(create_model("tiny_resnet", 3))
    assert tiny.crop_pct == 1.0 and DataConfig.of(create_model("tiny_resnet", 3), crop_pct=0.5).crop_pct == 0.5


def test_unknown_names_fail_with_the_choices():
    with pytest.raises(UsageError, match="eval"):
        PREPROCESS.get("nope")
    with pytest.raises(UsageError):
        DataConfig((8, 8), crop_pct=0)
