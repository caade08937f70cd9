"""``material``: every material slot of the object takes the material of a .blend file (3DB's control)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import SceneState
from confidently.render3db.controls.base import Control, Discrete, register_control

KEEP = "keep_original"
MATERIAL_FOLDER = "blender_control_material"


@register_control("material")
class Material(Control):
    doc = ("`replacement_material`: a .blend holding one material, which replaces every material slot of the "
           "object, or `keep_original`; the default searches ROOT/blender_control_material/*.blend and keep_original "
           "(3DB's rule; a bare file name is looked for there, other names are relative to ROOT).")
    params = {"replacement_material": Discrete((KEEP,), field="material", doc="FILE.blend | keep_original")}

    def __init__(self, root: Path | None = None):
        super().__init__(root)
        folder = self.root / MATERIAL_FOLDER
        files = sorted(f"{MATERIAL_FOLDER}/{p.name}" for p in folder.glob("*.blend")) if folder.is_dir() else []
        self.params = {"replacement_material": Discrete((*files, KEEP), field="material",
                                                        doc=self.params["replacement_material"].doc)}

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if path.is_absolute() and not path.is_file():  # 3DB writes ROOT-relative names with a leading /
            path = Path(value.lstrip("/"))
        if path.is_absolute():
            return path
        in_folder = self.root / MATERIAL_FOLDER / path  # 3DB's configs name the files of that folder
        return in_folder if len(path.parts) == 1 and not (self.root / path).is_file() else self.root / path

    def check_value(self, param: str, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise UsageError(f"material.replacement_material: expected a .blend file or {KEEP}, got {value!r}")
        if value != KEEP:
            path = self._path(value)
            if path.suffix.lower() != ".blend":
                raise UsageError(f"material.replacement_material {value!r}: expected a .blend file or {KEEP}")
            if not path.is_file():
                raise InvalidInput(f"material.replacement_material: material file {path} does not exist")
        return value

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        value = args["replacement_material"]
        state.material = None if value == KEEP else self._path(value)
