import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.models import count_parameters, create_model, list_archs
from safetensors.torch import save_file


def test_tiny_archs_are_registered_and_small():
    assert {"tiny_vit", "tiny_resnet"} <= set(list_archs())
    vit, resnet = create_model("tiny_vit", 10), create_model("tiny_resnet", 10)
    assert count_parameters(vit) < 150_000 and count_parameters(resnet) < 400_000
    assert vit.is_vit and not resnet.is_vit
    x = torch.rand(2, 3, 32, 32)
    assert vit(x).shape == (2, 10) and resnet(x).shape == (2, 10)
    assert vit.features(x).shape == (2, 64)


def test_any_timm_name_builds_without_the_hub():
    model = create_model("resnet10t", 3, img_size=64)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert model.input_size == (3, 64, 64) and model.mean == (0.485, 0.456, 0.406)
    vit = create_model("vit_tiny_patch16_224", 5, img_size=32, patch_size=8)
    assert vit.is_vit and vit(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_unknown_arch_suggests_names():
    with pytest.raises(UsageError, match="did you mean"):
        create_model("resnet1", 10)


def test_local_weights_only_from_safetensors(tmp_path):
    source = create_model("tiny_resnet", 4)
    save_file(source.net.state_dict(), tmp_path / "w.safetensors")
    copy = create_model("tiny_resnet", 4, weights=tmp_path / "w.safetensors")
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(source.eval()(x), copy.eval()(x))
    with pytest.raises(InvalidInput, match="do not fit"):
        create_model("tiny_resnet", 7, weights=tmp_path / "w.safetensors")


def test_input_checks_say_what_to_change():
    vit = create_model("tiny_vit", 10)
    with pytest.raises(InvalidInput, match="32×32"):
        vit.check_input(torch.rand(1, 3, 48, 48))
    with pytest.raises(InvalidInput, match="3-channel"):
        vit.check_input(torch.rand(1, 1, 32, 32))
