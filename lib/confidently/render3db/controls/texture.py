"""``texture``: the object's own material, or a texture written by `unadv-patch texture` (tool extension)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Control, Discrete, register_control

ORIGINAL = "original"


@register_control("texture")
class Texture(Control):
    doc = ("`source`: `original` (the object's own look) or an `unadv-patch texture` file; FILE uses the texture "
           "of the object's label when the file has one, else its first; FILE#K the texture of class K.")
    params = {"source": Discrete((ORIGINAL,), field="texture",
                                 doc="original | FILE.safetensors | FILE.safetensors#CLASS")}

    def __init__(self, root: Path | None = None):
        super().__init__(root)
        self._files: dict[str, tuple[torch.Tensor, list[int]]] = {}

    def _split(self, value: str) -> tuple[Path, int | None]:
        name, _, which = value.partition("#")
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.root / path
        if which == "":
            return path, None
        try:
            return path, int(which)
        except ValueError:
            raise UsageError(f"texture.source {value!r}: expected FILE#CLASS with an integer class") from None

    def _load(self, path: Path) -> tuple[torch.Tensor, list[int]]:
        key = str(path)
        if key not in self._files:
            from confidently.unadversarial.texture import load_texture

            if not path.is_file():
                raise InvalidInput(f"texture.source: texture file {path} does not exist")
            textures, class_ids, _ = load_texture(path)
            self._files[key] = (textures, [int(c) for c in class_ids])
        return self._files[key]

    def check_value(self, param: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise UsageError(f"texture.source: expected 'original' or a texture file name, got {value!r}")
        if value != ORIGINAL:
            path, which = self._split(value)
            _, class_ids = self._load(path)
            if which is not None and which not in class_ids:
                raise UsageError(f"texture.source {value!r}: the file holds classes {class_ids}")
        return value

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        source = args["source"]
        if source == ORIGINAL:
            state.texture = None
            return
        path, which = self._split(source)
        textures, class_ids = self._load(path)
        if which is None:
            label = (context or {}).get("label")
            labels = label if isinstance(label, list) else [label]
            which = next((c for c in labels if c in class_ids), class_ids[0])
        state.texture = textures[class_ids.index(which)]
