"""The installed environment has every part the tools need, importable together and offline."""

import importlib

import pytest


@pytest.mark.parametrize("module", ["timm", "piq", "lime", "safetensors", "typer", "rich", "sklearn", "skimage"])
def test_core_imports(module):
    importlib.import_module(module)


def test_timm_and_torchvision_pair():
    import timm
    import torch
    import torchvision

    assert torchvision.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]
    model = timm.create_model("resnet10t", pretrained=False, num_classes=2).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_piq_metric_runs():
    import piq
    import torch

    x = torch.rand(1, 3, 32, 32)
    assert float(piq.ssim(x, x, data_range=1.0)) == pytest.approx(1.0)


@pytest.mark.render
def test_bpy_imports_headless():
    bpy = pytest.importorskip("bpy")
    assert bpy.app.background


@pytest.mark.render
def test_mitsuba_cpu_variants():
    from confidently.render.llvm import point_drjit_at_llvm

    point_drjit_at_llvm()  # as the library does: Dr.Jit picks its LLVM when it is first imported
    mitsuba = pytest.importorskip("mitsuba")
    mitsuba.set_variant("scalar_rgb")
    mitsuba.set_variant("llvm_ad_rgb")  # needs libllvm19, which `make test` installs
    assert mitsuba.variant() == "llvm_ad_rgb"


def test_airsim_client_api():
    airsim = pytest.importorskip("cosysairsim")
    assert hasattr(airsim, "VehicleClient") and hasattr(airsim, "MultirotorClient")


def test_diffusion_pipelines_are_real_classes():
    import diffusers

    assert "dummy" not in diffusers.StableDiffusionInpaintPipeline.__module__
    assert "dummy" not in diffusers.StableDiffusionImg2ImgPipeline.__module__


def test_ray_imports():
    pytest.importorskip("ray")
