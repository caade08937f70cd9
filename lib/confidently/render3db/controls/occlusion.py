"""``occlusion``: an occluder between camera and object (3DB's control; occluders from ROOT/ood_objects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.errors import InvalidInput, UsageError
from confidently.render.scene import Occluder, SceneState
from confidently.render3db.controls.base import Continuous, Control, Discrete, register_control

OCCLUDER_FOLDER = "ood_objects"
OCCLUDER_SUFFIXES = (".blend", ".obj", ".ply", ".stl", ".glb", ".gltf")
BUILTIN_OCCLUDERS = ("cube", "sphere")  # used when ROOT/ood_objects holds no occluder files


@register_control("occlusion")
class Occlusion(Control):
    doc = ("Place an occluder at `zoom` of the way from the object to the camera, scaled by `scale`, coming from "
           "compass `direction` 0-7 (3DB's order: (1,-1) (1,0) (1,1) (0,-1) (0,1) (-1,-1) (-1,0) (-1,1), x right, "
           "y up) until it covers about `occlusion_ratio` of the object's 2-D box. `occluder`: an index into the "
           "sorted files of ROOT/ood_objects (3DB), a file name, or a built-in shape (cube, sphere; the indices "
           "run over these when ROOT/ood_objects holds no files).")
    params = {"occlusion_ratio": Continuous((0.1, 1.0), low=0.0, high=1.0, field="occluder",
                                            doc="share of the object's 2-D box covered"),
              "zoom": Continuous((0.1, 0.4), low=0.0, high=1.0, open_low=True, field="occluder",
                                 doc="0 = at the object, 1 = at the camera"),
              "scale": Continuous((0.25, 1.0), low=0.0, open_low=True, field="occluder",
                                  doc="size factor: beside a 3DB ROOT's objects an occluder file keeps its own "
                                      "Blender size × scale; a built-in, and beside the toolbox's objects any "
                                      "occluder, has radius scale × the object's bounding radius"),
              "direction": Discrete(tuple(range(8)), choices=tuple(range(8)), field="occluder",
                                    doc="compass direction 0-7 the occluder comes from"),
              "occluder": Discrete((0,), field="occluder", doc="index | FILE | cube | sphere")}

    def __init__(self, root: Path | None = None):
        super().__init__(root)
        folder = self.root / OCCLUDER_FOLDER
        self.files = sorted(p for p in folder.glob("*") if p.suffix.lower() in OCCLUDER_SUFFIXES) \
            if folder.is_dir() else []
        count = len(self.files) or len(BUILTIN_OCCLUDERS)
        self.params = {**self.params, "occluder": Discrete(tuple(range(count)), field="occluder",
                                                             doc=self.params["occluder"].doc)}

    def _resolve(self, value: Any) -> tuple[Path | None, str | None]:
        if isinstance(value, int) and not isinstance(value, bool):
            if self.files:
                if not 0 <= value < len(self.files):
                    raise UsageError(f"occlusion.occluder {value}: {self.root / OCCLUDER_FOLDER} holds "
                                     f"{len(self.files)} occluders (indices 0-{len(self.files) - 1})")
                return self.files[value], None
            if not 0 <= value < len(BUILTIN_OCCLUDERS):
                raise UsageError(f"occlusion.occluder {value}: no files in {self.root / OCCLUDER_FOLDER}, so the "
                                 f"indices pick the built-ins {', '.join(BUILTIN_OCCLUDERS)} (0-1)")
            return None, BUILTIN_OCCLUDERS[value]
        if isinstance(value, str) and value in BUILTIN_OCCLUDERS:
            return None, value
        if not isinstance(value, str) or Path(value).suffix.lower() not in OCCLUDER_SUFFIXES:
            raise UsageError(f"occlusion.occluder {value!r}: expected an index, a {'/'.join(OCCLUDER_SUFFIXES)} file "
                             f"or one of {', '.join(BUILTIN_OCCLUDERS)}")
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.root / path
        if not path.is_file():
            raise InvalidInput(f"occlusion.occluder: occluder file {path} does not exist")
        return path, None

    def check_value(self, param: str, value: Any) -> Any:
        if param == "occluder":
            self._resolve(value)
            return value
        return super().check_value(param, value)

    def apply(self, state: SceneState, args: dict[str, Any], context: dict[str, Any] | None = None) -> None:
        path, builtin = self._resolve(args["occluder"])
        state.occluder = Occluder(args["occlusion_ratio"], args["zoom"], args["scale"], int(args["direction"]),
                                  path, builtin)
