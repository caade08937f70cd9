"""Fixtures for render-3db: experiment files and a small untrained model whose predictions vary."""

from __future__ import annotations

import pytest
import torch
import yaml


@pytest.fixture
def experiment_file(tmp_path):
    """Write an experiment YAML (sections as keyword arguments) and return its path."""

    def write(name: str = "exp.yaml", **sections):
        sections.setdefault("render_args", {"engine": "null", "resolution": 32, "samples": 4})
        sections.setdefault("objects", [{"id": "mug", "builtin": "mug", "label": 1, "color": [0.8, 0.3, 0.2]},
                                        {"id": "ball", "builtin": "sphere", "label": 6}])
        path = tmp_path / name
        path.write_text(yaml.safe_dump(sections, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def varied_model(tmp_path_factory):
    """An untrained tiny ResNet (seed 1) saved to a file: its predictions on renders vary between classes."""
    from confidently.models import create_model, save_model

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(create_model("tiny_resnet", 10), path)
    return path
