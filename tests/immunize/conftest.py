"""Tiny random LDMs (spec §3.5) shared by the immunize tests, and a guard against network access."""

from __future__ import annotations

import socket

import pytest
import torch


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every immunize test runs offline: a socket connect fails loudly instead of reaching the Hub."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from confidently.immunize import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-inpaint"), size=32, unet="inpaint", seed=0)


@pytest.fixture(scope="session")
def tiny_img2img_dir(tmp_path_factory):
    from confidently.immunize import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-img2img"), size=32, unet="img2img", seed=0)


@pytest.fixture(scope="session")
def ldm(tiny_dir):
    from confidently.immunize import load_ldm

    return load_ldm(tiny_dir, "cpu", "fp32")


@pytest.fixture(scope="session")
def ldm_img2img(tiny_img2img_dir):
    from confidently.immunize import load_ldm

    return load_ldm(tiny_img2img_dir, "cpu", "fp32")


def blobs(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour blobs in [0, 1] (a 4×4 random grid, bicubic-upsampled): count×3×size×size."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(count, 3, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def centre_mask(size: int = 32) -> torch.Tensor:
    """1×1×size×size, 1 (regenerate) on the centre square of half the side."""
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return mask
