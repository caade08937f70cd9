"""Test textures shared by the renderer and engine tests."""

import torch


def quadrants(side: int) -> torch.Tensor:
    """Red, green, blue and yellow quarters: rows < side/2 (v < 0.5) red/green, columns < side/2 (u < 0.5)
    red/blue."""
    texture = torch.zeros(3, side, side)
    half = side // 2
    texture[0, :half, :half] = 1
    texture[1, :half, half:] = 1
    texture[2, half:, :half] = 1
    texture[:2, half:, half:] = 1
    return texture
