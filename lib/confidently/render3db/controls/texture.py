"""``texture``: the object's own material, a texture written by `unadv-patch texture`, or an image file (3DB
users' texture swap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Control, Discrete, register_control

ORIGINAL = "original"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@register_control("texture")
class Texture(Control):
    doc = ("`source`: `original` (the object's own look), an `unadv-patch texture` file (FILE uses the texture "
           "of the object's label when the file has one, else its first; FILE#K the texture of class K), or a "
           "PNG/JPEG image, stretched to a square of its longer side and laid on the object's UV map as shown.")
    params = {"source": Discrete((ORIGINAL,), field="texture",
                                 doc="original | FILE.safetensors | FILE.safetensors#CLASS | IMAGE.png/.jpg")}

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
            if path.suffix.lower() in IMAGE_SUFFIXES:
                self._files[key] = (_image_texture(path)[None], [])
                return self._files[key]
            textures, class_ids, _ = load_texture(path)
            self._files[key] = (textures, [int(c) for c in class_ids])
        return self._files[key]

    def check_value(self, param: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise UsageError(f"texture.source: expected 'original' or a texture file name, got {value!r}")
        if value != ORIGINAL:
            path, which = self._split(value)
            _, class_ids = self._load(path)
            if which is not None and path.suffix.lower() in IMAGE_SUFFIXES:
                raise UsageError(f"texture.source {value!r}: an image is one texture; drop #{which}")
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
        if not class_ids:  # an image file
            state.texture = textures[0]
            return
        if which is None:
            label = (context or {}).get("label")
            labels = label if isinstance(label, list) else [label]
            which = next((c for c in labels if c in class_ids), class_ids[0])
        state.texture = textures[class_ids.index(which)]


def _image_texture(path: Path) -> torch.Tensor:
    """A PNG/JPEG as a 3×s×s texture in [0, 1] (s = its longer side), rows top→bottom as the image shows."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = max(image.size)
            array = np.asarray(image.resize((side, side), Image.BILINEAR) if image.size != (side, side) else image)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInput(f"texture.source: cannot read image {path}: {exc}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255
