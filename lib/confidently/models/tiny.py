"""Tiny architectures that train to >90 % on ``demo:digits`` in about a minute on a CPU.

They are real registry entries (timm modules with small settings), so every tool's tests
can build a trained model in seconds, as timm's ``test_vit`` does for timm.
"""

from __future__ import annotations

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from confidently.models.registry import register_arch

DEMO_MEAN = (0.5, 0.5, 0.5)
DEMO_STD = (0.25, 0.25, 0.25)


@register_arch("tiny_vit", img_size=32, mean=DEMO_MEAN, std=DEMO_STD)
def tiny_vit(num_classes: int, in_chans: int = 3, img_size: int | None = 32, *, patch_size: int = 4,
             embed_dim: int = 64, depth: int = 3, num_heads: int = 4, mlp_ratio: float = 2.0,
             global_pool: str = "token") -> VisionTransformer:
    """ViT with 4×4 patches (64 tokens on 32×32), class-token pooling; about 110k parameters.

    Positional embeddings start from 2-D sine-cosine values (still learned): on a thousand
    training images this is what lets a ViT this small train in a few epochs.
    """
    vit = VisionTransformer(img_size=img_size or 32, patch_size=patch_size, in_chans=in_chans,
                            num_classes=num_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                            mlp_ratio=mlp_ratio, global_pool=global_pool)
    grid = list(vit.patch_embed.grid_size)
    with torch.no_grad():
        vit.pos_embed[:, vit.num_prefix_tokens:] = build_sincos2d_pos_embed(grid, embed_dim).unsqueeze(0)
        vit.pos_embed[:, :vit.num_prefix_tokens] = 0
    return vit


@register_arch("tiny_resnet", img_size=32, mean=DEMO_MEAN, std=DEMO_STD)
def tiny_resnet(num_classes: int, in_chans: int = 3, img_size: int | None = 32, *,
                channels: tuple[int, ...] = (16, 32, 64, 128), stem_width: int = 16) -> ResNet:
    """ResNet with one BasicBlock per stage; about 320k parameters."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, in_chans=in_chans,
                  channels=tuple(channels), stem_width=stem_width)


class SmallCNN(nn.Module):
    """Three 3×3 conv–BN–ReLU layers (the second and third stride 2), global average pooling
    and a linear head: the advtrain spec's pilot model. Exposes timm's classifier API so
    transfer can swap its head. ``pool="max"`` pools globally by maximum instead: a small object
    anywhere on a larger canvas (the unadversarial-patch experiments) then stays visible."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 16, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"small_cnn pool={pool!r}: choose avg or max")
        self.pool = pool
        layers, channels = [], in_chans
        for index, out in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(channels, out, 3, stride=1 if index == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.num_features = channels
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.amax(dim=(2, 3)) if self.pool == "max" else x.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


@register_arch("small_cnn", img_size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
def small_cnn(num_classes: int, in_chans: int = 3, img_size: int | None = 8, *, width: int = 16,
              pool: str = "avg") -> SmallCNN:
    """About 25k parameters; any input size (global pooling, ``avg`` or ``max``)."""
    return SmallCNN(num_classes, in_chans, width, pool)
