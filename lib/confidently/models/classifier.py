"""The model every tool passes around: a network with its normalisation inside.

Tools feed pixels in [0, 1]; the :class:`Classifier` normalises, runs the network and
remembers what it needs to be saved and rebuilt (architecture, classes, input size).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, stored as buffers so it travels with the weights."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Classifier(nn.Module):
    """Normalisation + network. ``forward`` takes float pixels in [0, 1], N×C×H×W."""

    def __init__(self, net: nn.Module, *, arch: str, arch_kwargs: dict[str, Any], num_classes: int,
                 input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 classes: list[str] | None = None, training: dict[str, Any] | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.num_classes = num_classes
        self.input_size = tuple(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.classes = list(classes) if classes is not None else None
        self.training_info: dict[str, Any] = dict(training or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (what a linear head sees), for transfer and feature shards."""
        net = self.net
        if hasattr(net, "forward_features") and hasattr(net, "forward_head"):
            return net.forward_head(net.forward_features(self.normalize(x)), pre_logits=True)
        raise TypeError(f"{type(net).__name__} has no forward_features/forward_head to read features from")

    @property
    def is_vit(self) -> bool:
        from confidently.models.token_drop import supports_token_drop

        return supports_token_drop(self.net)

    def metadata(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (see ``schemas/model-metadata.schema.json``)."""
        from confidently import __version__
        from confidently.io.model_files import MODEL_FORMAT

        return {"format": MODEL_FORMAT, "version": __version__, "arch": self.arch, "arch_kwargs": self.arch_kwargs,
                "num_classes": self.num_classes, "input_size": list(self.input_size), "mean": list(self.mean),
                "std": list(self.std), "classes": self.classes, "training": self.training_info}

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse inputs the network cannot take, with a message that says what to change."""
        from confidently.errors import InvalidInput

        channels, height, width = self.input_size
        if x.ndim != 4 or x.shape[1] != channels:
            raise InvalidInput(f"model {self.arch} takes {channels}-channel images; got a batch shaped {list(x.shape)}")
        if self.is_vit and (x.shape[-2] != height or x.shape[-1] != width):
            raise InvalidInput(f"model {self.arch} takes {height}×{width} images; got {x.shape[-2]}×{x.shape[-1]} "
                               f"(resize the data, e.g. --img-size {height})")
        was_training = self.training
        try:
            with torch.no_grad():
                self.eval()(x[:1].to(self.normalize.mean.device))
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise InvalidInput(f"model {self.arch} cannot take {x.shape[-2]}×{x.shape[-1]} images ({exc}); "
                               "choose another --img-size") from None
        finally:
            self.train(was_training)
