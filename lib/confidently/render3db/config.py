"""The experiment file: 3DB-style YAML, parsed and checked before anything renders.

Top-level keys: ``base_config`` (a file whose top-level keys this one overrides), ``objects``,
``environments``, ``inference``, ``evaluation``, ``render_args``, ``policy``, ``controls``, ``logging``,
``executor``. A control parameter is written as a scalar (fixed), ``{range: [a, b], endpoint: false}``,
a 2-list or the string ``"(a, b)"`` (continuous range), or ``{values: [...]}`` or a list (discrete
values). Unknown keys, values outside a parameter's domain, missing files and controls the chosen
engine cannot honour are refused here, with the valid choices in the message.

3DB's own form reads unchanged (:func:`load_experiment` with ``threedb_root``): ``inference`` with
``module``/``class``/``args``/``output_shape``, module paths (``threedb.controls.blender.camera``,
``threedb.evaluators.classification``, ``threedb.policies.grid_search``,
``threedb.rendering.render_blender``) by their last part, ``evaluation.args.classmap_path`` as the
objects' labels, ``logging.logger_modules``; objects and environments are found in ROOT as 3DB finds
them, and relative paths resolve from the working directory, then from ROOT. What 3DB's published
examples hold beyond its current code is read with a warning and a default (each through :func:`tolerate`):
the former package name ``sandbox.*`` and ``inference.uid_to_logits``/``uid_to_targets`` (the class map's older
keys; :func:`modernise`), ``logging.root_dir``, module names 3DB has since renamed (``pose``,
``imagenet_c_corruption``, ``threedb.rendering.blender``), ``samples`` given to the grid policy or a policy
naming only ``samples_per_dim``, parameter names in another case, one control given twice, a ``mug_liquid``
point with both ratios 0; and, as 3DB's YAML loader reads them, ``!!python/tuple`` values and one-number
ranges such as ``"(0.9)"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs, SceneState
from confidently.render3db.controls import CONTROLS, Continuous, Control, Discrete
from confidently.render3db.settings import ControlSetup, Setting
from confidently.render3db.space import make_policy, search_space

TOP_LEVEL = ("base_config", "objects", "environments", "inference", "evaluation", "render_args", "policy",
             "controls", "logging", "executor")
OBJECT_KEYS = ("id", "label", "builtin", "path", "color")
ENVIRONMENT_KEYS = ("id", "solid", "procedural", "path")
INFERENCE_KEYS = ("model", "module", "class", "args", "resolution", "normalization", "label_map", "output_shape")
EVALUATION_KEYS = ("module", "args")
RENDER_KEYS = ("engine", "resolution", "samples", "threads", "with_uv", "with_depth", "with_segmentation",
               "max_depth", "seed")
LOGGING_KEYS = ("images", "path", "shard_size", "logger_modules", "root_dir")
LOGGERS = ("image_logger", "json_logger", "tb_logger")  # 3DB's result_logging modules, by last part
ENGINE_ALIASES = {"render_blender": "bpy", "blender": "bpy", "render_mitsuba": "mitsuba"}
OLD_ENGINES = {"blender": "render_blender"}  # 3DB's older rendering module names
CONTROL_ALIASES = {"imagenet_c_corruption": "imagenet_c", "pose": "orientation"}  # 3DB's older module names
OLD_PACKAGE = "sandbox."  # 3DB's package before it was named threedb
CLASSMAP_KEYS = ("uid_to_logits", "uid_to_targets")  # 3DB's older inference keys for the uid → class map
MODEL_FOLDER, ENVIRONMENT_FOLDER = "blender_models", "blender_environments"
ENVIRONMENT_SUFFIXES = (".blend", ".hdr", ".exr")
EXECUTOR_KEYS = ("kind", "workers", "address", "chunk_size")
MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".blend", ".stl")
RENDER_DEFAULTS = {"engine": "bpy", "resolution": 256, "samples": 16, "threads": 1, "with_uv": False,
                   "with_depth": False, "with_segmentation": False, "max_depth": 10.0, "seed": 0}


@dataclass
class Experiment:
    """A parsed, checked experiment file (see the module doc); picklable, so workers get a copy."""

    source: str
    root: Path
    raw: dict[str, Any]
    objects: list[ObjectSpec]
    environments: list[EnvironmentSpec]
    inference: dict[str, Any]
    evaluation: dict[str, Any]
    renderer: str
    render: RenderArgs
    render_seed: int
    policy: dict[str, Any]
    controls: list[ControlSetup]
    logging: dict[str, Any]
    executor: dict[str, Any]
    label_names: list[str] | None = None
    threedb: bool = False  # read from a 3DB ROOT (render-3db run ROOT CONFIG OUTDIR)
    loggers: tuple[str, ...] = ()  # logging.logger_modules by last part (image_logger, json_logger, tb_logger)

    def sha256(self, seed: int) -> str:
        """A fingerprint of what is rendered (objects, environments, engine and its settings but threads,
        policy, controls) and the run seed: job ids and render seeds derive from it. The model and the
        evaluator are left out, so two models judged on one experiment see the same renders under the
        same ids (and ``--no-eval`` images join the evaluated records by id)."""
        render = {k: v for k, v in asdict(self.render).items() if k != "threads"}
        body = {"objects": [_jsonable(asdict(o)) for o in self.objects],
                "environments": [_jsonable(asdict(e)) for e in self.environments],
                "renderer": self.renderer, "render": render, "policy": _jsonable(self.policy),
                "controls": [{"module": c.name, **{k: s.describe() for k, s in c.settings.items()}}
                             for c in self.controls], "seed": seed}
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def pairs(self) -> list[tuple[EnvironmentSpec, ObjectSpec]]:
        """(environment, object) pairs in run order: environments outside, objects inside (3DB)."""
        return [(env, obj) for env in self.environments for obj in self.objects]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``!!python/tuple`` (3DB loads its configs with PyYAML's FullLoader,
    and its scale example writes a range that way) as a list; every other Python tag is still refused."""


_Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One experiment file with its ``base_config`` chain merged (this file's top-level keys win)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"experiment file {path} does not exist")
    if path.resolve() in seen:
        raise UsageError(f"base_config cycle: {' -> '.join(str(p) for p in (*seen, path.resolve()))}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}  # a SafeLoader, plus tuples
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of sections ({', '.join(TOP_LEVEL)})")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(TOP_LEVEL)}")
    base = data.pop("base_config", None)
    if base is None:
        return data
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    merged = read_yaml(base_path, (*seen, path.resolve()))
    merged.update(data)
    return merged


def _check_keys(section: str, data: Any, valid: tuple[str, ...]) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{section}: expected a mapping with keys {', '.join(valid)}")
    unknown = sorted(set(map(str, data)) - set(valid))
    if unknown:
        raise UsageError(f"{section}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    return data


def _resolve(root: Path | tuple[Path, ...], name: str) -> Path:
    """``name`` under the first of ``root`` (one folder, or folders in search order) that holds it; a name
    found nowhere resolves under the first, for the caller's "does not exist"."""
    path = Path(str(name)).expanduser()
    if path.is_absolute():
        return path
    bases = root if isinstance(root, tuple) else (root,)
    return next((base / path for base in bases if (base / path).exists()), bases[0] / path)


def _where(root: Path | tuple[Path, ...]) -> str:
    return " or ".join(str(b) for b in (root if isinstance(root, tuple) else (root,)))


def tolerate(message: str) -> None:
    """A config 3DB publishes but its own code rejects: read it with a default and say so."""
    warnings.warn(f"3DB config: {message}", UserWarning, stacklevel=3)


def modernise(raw: dict[str, Any]) -> dict[str, Any]:
    """The published 3DB configs that predate its current code, in its current form, each change said once:
    ``sandbox.*`` modules as ``threedb.*``, and ``inference.uid_to_logits``/``uid_to_targets`` as
    ``evaluation.args.classmap_path`` (where the current code reads the uid → class map)."""
    raw = dict(raw)
    renamed = []

    def current(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(OLD_PACKAGE):
            renamed.append(value)
            return "threedb." + value[len(OLD_PACKAGE):]
        return value

    for section in ("evaluation", "policy"):
        if isinstance(raw.get(section), dict) and "module" in raw[section]:
            raw[section] = {**raw[section], "module": current(raw[section]["module"])}
    if isinstance(raw.get("render_args"), dict) and "engine" in raw["render_args"]:
        raw["render_args"] = {**raw["render_args"], "engine": current(raw["render_args"]["engine"])}
    if isinstance(raw.get("controls"), list):
        raw["controls"] = [{**c, "module": current(c["module"])} if isinstance(c, dict) and "module" in c else c
                           for c in raw["controls"]]
    if isinstance(raw.get("logging"), dict) and isinstance(raw["logging"].get("logger_modules"), list):
        raw["logging"] = {**raw["logging"], "logger_modules": [current(m) for m in raw["logging"]["logger_modules"]]}
    if renamed:
        tolerate(f"{', '.join(dict.fromkeys(renamed))}: sandbox is 3DB's former package name; read as threedb.*")
    inference = raw.get("inference")
    old = [k for k in CLASSMAP_KEYS if isinstance(inference, dict) and k in inference]
    if old:
        inference = dict(inference)
        values = [inference.pop(k) for k in old]
        raw["inference"] = inference
        evaluation = dict(raw.get("evaluation") or {})
        args = evaluation.get("args") if isinstance(evaluation.get("args"), dict) else {}
        if args.get("classmap_path") is not None:
            tolerate(f"inference.{old[0]} beside evaluation.args.classmap_path; reading the class map from the latter")
        else:
            tolerate(f"inference.{old[0]} is 3DB's older key for the uid → class map; reading it as "
                     "evaluation.args.classmap_path")
            evaluation["args"] = {**args, "classmap_path": values[0]}
            raw["evaluation"] = evaluation
    return raw


def _color(value: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in value):
        raise UsageError(f"{where}: expected an RGB triple in [0, 1], e.g. [1, 1, 1], got {value!r}")
    return tuple(float(v) for v in value)


def _label(value: Any, where: str, names: list[str] | None) -> int | list[int]:
    def one(v: Any) -> int:
        if isinstance(v, str):
            if names is None or v not in names:
                raise UsageError(f"{where}: label {v!r} is a name; give inference.label_map (a JSON array of class "
                                 "names) or use class indices")
            return names.index(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UsageError(f"{where}: expected a class index >= 0 (or a list of them), got {v!r}")
        return v

    if isinstance(value, list):
        if not value:
            raise UsageError(f"{where}: an empty label list")
        return [one(v) for v in value]
    return one(value)


def _listed(section: str, data: Any, keys: tuple[str, ...], example: str,
            default_id: str) -> list[tuple[str, dict[str, Any], str]]:
    """The entries of a non-empty list section as (where, checked entry, unique id)."""
    if not isinstance(data, list) or not data:
        raise UsageError(f"{section}: expected a non-empty list, e.g. [{example}]")
    out, seen = [], set()
    for i, item in enumerate(data):
        where = f"{section}[{i}]"
        item = _check_keys(where, item, keys)
        item_id = str(item.get("id", f"{default_id}{i}"))
        if item_id in seen:
            raise UsageError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        out.append((where, item, item_id))
    return out


def parse_objects(data: Any, root: Path | tuple[Path, ...], names: list[str] | None) -> list[ObjectSpec]:
    out = []
    for where, item, oid in _listed("objects", data, OBJECT_KEYS, "{id: ball, builtin: sphere, label: 0}", "object"):
        if "label" not in item:
            raise UsageError(f"{where} ({oid}): needs a label (class index, list of indices, or a label_map name)")
        label = _label(item["label"], f"{where}.label", names)
        color = _color(item["color"], f"{where}.color") if "color" in item else (0.8, 0.8, 0.8)
        path = None
        if item.get("path") is not None:
            path = _resolve(root, item["path"])
            if path.suffix.lower() not in MESH_SUFFIXES:
                raise UsageError(f"{where}.path {item['path']!r}: expected a mesh file ({', '.join(MESH_SUFFIXES)})")
            if not path.is_file():
                raise InvalidInput(f"{where}.path: mesh file {path} does not exist", field="path")
        builtin = item.get("builtin")
        out.append(ObjectSpec(id=oid, label=label, builtin=str(builtin) if builtin is not None else None, path=path,
                              color=color))
    return out


def parse_environments(data: Any, root: Path | tuple[Path, ...]) -> list[EnvironmentSpec]:
    if data is None:
        return [EnvironmentSpec(id="white", solid=(1.0, 1.0, 1.0))]
    out = []
    for where, item, eid in _listed("environments", data, ENVIRONMENT_KEYS, "{id: white, solid: [1, 1, 1]}", "env"):
        given = [k for k in ("solid", "procedural", "path") if item.get(k) is not None]
        if len(given) != 1:
            raise UsageError(f"{where} ({eid}): give exactly one of solid: [r, g, b], procedural: NAME, path: FILE")
        solid = _color(item["solid"], f"{where}.solid") if "solid" in given else None
        path = _resolve(root, item["path"]) if "path" in given else None
        if path is not None and not path.is_file():
            raise InvalidInput(f"{where}.path: environment file {path} does not exist", field="path")
        out.append(EnvironmentSpec(id=eid, solid=solid, procedural=str(item["procedural"]) if "procedural" in given
                                   else None, path=path))
    return out


def _number_pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("(") and text.endswith(")"):
            parts = [p.strip() for p in text[1:-1].split(",")]
            try:
                value = [float(eval_number(p)) for p in parts]
            except ValueError:
                return None
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return float(value[0]), float(value[1])
    return None


def _parenthesised(value: Any) -> float | None:
    """``"(0.9)"``: one number in parentheses, which 3DB's ``literal_eval`` reads as that number (a fixed value)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not (text.startswith("(") and text.endswith(")")) or "," in text:
        return None
    try:
        return eval_number(text[1:-1].strip())
    except ValueError:
        return None


def eval_number(text: str) -> float:
    """A number, also written with pi (``-pi``, ``2*pi``, ``pi/2``), as angles are in 3DB configs."""
    cleaned = text.replace(" ", "").lower()
    try:
        return float(cleaned)
    except ValueError:
        pass
    sign = -1.0 if cleaned.startswith("-") else 1.0
    body = cleaned.lstrip("+-")
    factor = 1.0
    if "/" in body:
        body, divisor = body.split("/", 1)
        factor /= float(divisor)
    if "*" in body:
        coef, body = body.split("*", 1)
        factor *= float(coef)
    if body != "pi":
        raise ValueError(text)
    return sign * factor * math.pi


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return eval_number(value) if "pi" in value.lower() else value
        except ValueError:
            return value
    return value


def parse_setting(control: Control, name: str, raw: Any) -> Setting:
    """One parameter's config value → a :class:`Setting`, checked against the control's domain."""
    spec = control.params[name]
    where = f"{control.name}.{name}"
    continuous = isinstance(spec, Continuous)
    if isinstance(raw, dict):
        if "range" in raw:
            extra = sorted(set(raw) - {"range", "endpoint"})
            if extra:
                raise UsageError(f"{where}: unknown key(s) {', '.join(extra)} in a range; valid keys: range, endpoint")
            pair = _number_pair([_scalar(v) for v in raw["range"]] if isinstance(raw["range"], list) else raw["range"])
            if pair is None:
                raise UsageError(f"{where}: range must be two numbers [low, high], got {raw['range']!r}")
            endpoint = raw.get("endpoint", True)
            if not isinstance(endpoint, bool):
                raise UsageError(f"{where}: endpoint must be true or false")
            return _continuous(control, name, spec, pair, endpoint, where)
        if "values" in raw:
            extra = sorted(set(raw) - {"values"})
            if extra:
                raise UsageError(f"{where}: unknown key(s) {', '.join(extra)}; a value set is {{values: [...]}}")
            return _discrete(control, name, raw["values"], where)
        raise UsageError(f"{where}: expected a value, {{range: [low, high]}} or {{values: [...]}}; got keys "
                         f"{', '.join(map(str, raw))}")
    pair = _number_pair([_scalar(v) for v in raw] if isinstance(raw, list) else raw)
    if continuous and pair is not None:
        return _continuous(control, name, spec, pair, True, where)
    if isinstance(raw, list):
        return _discrete(control, name, raw, where)
    single = _parenthesised(raw) if continuous else None
    if single is not None:
        return Setting(control.name, name, "fixed", value=control.check_value(name, single))
    if isinstance(raw, str) and raw.strip().startswith("("):
        raise UsageError(f"{where}: {raw!r} is not a range of two numbers like \"(0, 1)\"")
    return Setting(control.name, name, "fixed", value=control.check_value(name, _scalar(raw)))


def _continuous(control: Control, name: str, spec: Any, pair: tuple[float, float], endpoint: bool,
                where: str) -> Setting:
    if not isinstance(spec, Continuous):
        raise UsageError(f"{where} is discrete: give {{values: [...]}} or a list, not a range")
    low, high = pair
    if low > high:
        raise UsageError(f"{where}: range [{low}, {high}] has low > high")
    low, high = control.check_value(name, low), control.check_value(name, high)
    if low == high:
        return Setting(control.name, name, "fixed", value=low)
    return Setting(control.name, name, "continuous", low=low, high=high, endpoint=endpoint)


def _discrete(control: Control, name: str, values: Any, where: str) -> Setting:
    if not isinstance(values, list) or not values:
        raise UsageError(f"{where}: values must be a non-empty list")
    checked = tuple(control.check_value(name, _scalar(v)) for v in values)
    if len(set(map(repr, checked))) != len(checked):
        raise UsageError(f"{where}: duplicate values in {list(values)}")
    if len(checked) == 1:
        return Setting(control.name, name, "fixed", value=checked[0])
    return Setting(control.name, name, "discrete", values=checked)


def default_setting(control: Control, name: str, threedb: bool = False) -> Setting:
    """What a config that omits ``name`` searches: the control's default, or, in a 3DB-form config, 3DB's
    where it differs (the camera's aperture: 3DB searches f/1 to f/32 where the toolbox keeps depth of field off)."""
    spec = control.params[name]
    default = spec.threedb if threedb and spec.threedb is not None else spec.default
    if isinstance(spec, Discrete):
        values = tuple(default)
        if len(values) == 1:
            return Setting(control.name, name, "fixed", value=values[0])
        return Setting(control.name, name, "discrete", values=values)
    if isinstance(default, tuple):
        return Setting(control.name, name, "continuous", low=float(default[0]), high=float(default[1]))
    return Setting(control.name, name, "fixed", value=default)


def control_class(module: str) -> type[Control]:
    """A control by registered name, by 3DB module path (``threedb.controls.blender.camera``) or ``py:mod:Class``."""
    last = module.rsplit(".", 1)[-1]
    if not module.startswith("py:") and last in CONTROL_ALIASES:
        tolerate(f"control {module!r} is 3DB's older name of {CONTROL_ALIASES[last]!r}; reading it as that")
        module = CONTROL_ALIASES[last]
    cls = CONTROLS.resolve(module)
    if module.startswith("py:"):
        if not (isinstance(cls, type) and issubclass(cls, Control)):
            raise UsageError(f"control {module!r} is not a confidently.render3db.controls.Control subclass")
        if not cls.name:
            cls.name = module.rsplit(":", 1)[-1].rsplit(".", 1)[-1].lower()
    return cls


def _canonical_names(cls: type[Control], given: dict[str, Any]) -> dict[str, Any]:
    """3DB's paper configs capitalise some parameters (``offset_X``, ``rotation_Z``): a name that matches one
    of the control's parameters but for case is read as that parameter, with a warning naming it."""
    folded = {name.lower(): name for name in cls.params}
    out, renamed = {}, []
    for key, value in given.items():
        name = key if key in cls.params else folded.get(str(key).lower(), key)
        if name in out:
            raise UsageError(f"control {cls.name!r}: parameter {name!r} given twice (once as {key!r})")
        if name != key:
            renamed.append(f"{key} as {name}")
        out[name] = value
    if renamed:
        tolerate(f"control {cls.name!r}: parameter names differ from its own in case; reading {', '.join(renamed)}")
    return out


def parse_controls(data: Any, root: Path, threedb: bool = False) -> list[ControlSetup]:
    """``controls``, one setup per control. An entry is in 3DB's form when ``threedb`` (read from a 3DB ROOT) or
    its module is a 3DB path: a parameter it omits then takes 3DB's default, and it may name a control again."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise UsageError("controls: expected a list of {module: NAME, param: value, ...}")
    out: list[ControlSetup] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "module" not in item:
            raise UsageError(f"controls[{i}]: expected a mapping with module: NAME (see `render-3db controls`)")
        cls = control_class(str(item["module"]))
        in_3db = threedb or str(item["module"]).startswith("threedb.")
        earlier = next((setup for setup in out if setup.name == cls.name), None)
        if earlier is not None and not in_3db:
            raise UsageError(f"controls[{i}]: control {cls.name!r} appears twice; give it once with value sets")
        control = cls(root)
        given = _canonical_names(cls, {k: v for k, v in item.items() if k != "module"})
        unknown = sorted(set(given) - set(cls.params))
        if unknown:
            raise UsageError(f"control {cls.name!r}: unknown parameter(s) {', '.join(unknown)}; valid parameters: "
                             f"{', '.join(cls.params)}")
        settings = {name: parse_setting(control, name, given[name]) if name in given
                    else default_setting(control, name, in_3db) for name in cls.params}
        if earlier is None:
            out.append(ControlSetup(str(item["module"]), settings, cls, entries=((i, settings),)))
            continue
        # 3DB keys values by control class: each parameter takes the last fixed value of any entry, else the last
        # entry's range or values; its grid still has a coordinate for every range of every entry (space.py)
        tolerate(f"control {cls.name!r} given twice (controls[{i}]); as 3DB does, each parameter takes a fixed value "
                 "from either entry (the later one's first), else the later entry's range, and the grid still counts "
                 "every range of both entries (so renders repeat); unlike 3DB, which applies the control once per "
                 "entry with the same values, it is applied once")
        earlier.settings = {name: new if new.mode == "fixed" or earlier.settings[name].mode != "fixed"
                            else earlier.settings[name] for name, new in settings.items()}
        earlier.entries = (*earlier.entries, (i, settings))
    return out


def _int(value: Any, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f"{where}: expected an integer >= {low}, got {value!r}")
    return value


def parse_render(data: Any, renderer: str | None) -> tuple[str, RenderArgs, int]:
    data = {**RENDER_DEFAULTS, **_check_keys("render_args", data, RENDER_KEYS)}
    resolution = data["resolution"]
    if isinstance(resolution, list):
        if len(resolution) != 2 or resolution[0] != resolution[1]:
            raise UsageError(f"render_args.resolution {resolution}: square renders only (one number, or [n, n])")
        resolution = resolution[0]
    for flag in ("with_uv", "with_depth", "with_segmentation"):
        if not isinstance(data[flag], bool):
            raise UsageError(f"render_args.{flag}: expected true or false")
    max_depth = data["max_depth"]
    if isinstance(max_depth, bool) or not isinstance(max_depth, int | float) or max_depth <= 0:
        raise UsageError("render_args.max_depth: expected a positive number")
    args = RenderArgs(resolution=_int(resolution, "render_args.resolution", 8),
                      samples=_int(data["samples"], "render_args.samples"),
                      threads=_int(data["threads"], "render_args.threads"), with_uv=data["with_uv"],
                      with_depth=data["with_depth"], with_segmentation=data["with_segmentation"],
                      max_depth=float(max_depth))
    engine = "null" if data["engine"] is None else str(data["engine"])  # YAML reads a bare null as None
    if engine.startswith("threedb.rendering."):
        last = engine.rsplit(".", 1)[-1]
        if last in OLD_ENGINES:
            tolerate(f"render_args.engine {engine!r} is 3DB's older name of threedb.rendering.{OLD_ENGINES[last]}")
        engine = ENGINE_ALIASES.get(last, engine)
    return str(renderer or engine), args, _int(data["seed"], "render_args.seed", 0)


def load_experiment(path: str | Path, *, root: str | Path | None = None, renderer: str | None = None,
                    model: str | None = None, threedb_root: str | Path | None = None) -> Experiment:
    """Read and check an experiment file; ``renderer`` and ``model`` override ``render_args.engine`` and
    ``inference.model`` (command-line flags win). Relative file names resolve against ``root``
    (default: the file's folder). With ``threedb_root`` (3DB's ROOT folder) objects and environments
    come from ROOT as 3DB finds them, unless the config narrows them, and relative names resolve from
    the working directory, then from ROOT, as in 3DB."""
    path = Path(path)
    raw = modernise(read_yaml(path))
    if threedb_root is not None:
        base = Path(threedb_root).resolve()
        if not base.is_dir():
            raise InvalidInput(f"ROOT {threedb_root} is not a folder (3DB's layout: {MODEL_FOLDER}/*.blend, "
                               f"{ENVIRONMENT_FOLDER}/*.blend|*.hdr|*.exr, resources/*.json)")
        search: Path | tuple[Path, ...] = (Path.cwd(), base)
    else:
        base = Path(root) if root is not None else path.resolve().parent
        search = base
    inference = parse_inference(raw.get("inference"), search, model)
    names = _label_names(_resolve(search, inference["label_map"])) if inference.get("label_map") is not None \
        else None
    evaluation, classmap = parse_evaluation(raw.get("evaluation"), search)
    renderer_name, render, render_seed = parse_render(raw.get("render_args"), renderer)
    logging, loggers = parse_logging(raw.get("logging"))
    if threedb_root is not None:
        objects = root_objects(base, raw.get("objects"), search, classmap, names)
        environments = root_environments(base, raw.get("environments"), search)
    else:
        objects = parse_objects(_with_labels(raw.get("objects"), classmap), search, names)
        environments = parse_environments(raw.get("environments"), search)
    experiment = Experiment(
        source=str(path), root=base, raw=raw, objects=objects, environments=environments, inference=inference,
        evaluation=evaluation, renderer=renderer_name, render=render, render_seed=render_seed,
        policy=parse_policy(raw.get("policy")),
        controls=parse_controls(raw.get("controls"), base, threedb_root is not None),
        logging=logging,
        executor=dict(_check_keys("executor", raw.get("executor"), EXECUTOR_KEYS)), label_names=names,
        threedb=threedb_root is not None, loggers=loggers)
    make_policy(experiment.policy, search_space(experiment.controls))  # refuse a bad policy now
    _warn_dry_mug(experiment)
    check_engine(experiment)
    return experiment


def _warn_dry_mug(experiment: Experiment) -> None:
    """3DB's mug_liquid divides coffee by milk + coffee, so a point with both 0 (which a grid over its default
    ranges reaches) stops 3DB; here it is water, and said."""
    setup = next((c for c in experiment.controls if c.name == "mug_liquid"), None)
    if setup is None or not (experiment.threedb or setup.module.startswith("threedb.")):
        return  # the toolbox's own form documents both 0 as water

    def reaches_zero(s: Setting) -> bool:
        if s.mode == "continuous":
            return s.low == 0 and experiment.policy.get("module") == "grid"
        return 0 in (s.values if s.mode == "discrete" else (s.value,))

    if all(reaches_zero(s) for s in setup.settings.values()):
        tolerate("mug_liquid: ratio_milk and ratio_coffee are both 0 at some points, where 3DB divides by zero; "
                 "those render as water")


def parse_inference(data: Any, search: Path | tuple[Path, ...], model: str | None) -> dict[str, Any]:
    """The toolbox's ``model: FILE``, or 3DB's ``module``/``class``/``args`` (a torchvision or timm network
    built by :mod:`confidently.render3db.inference`); ``--model`` wins over both."""
    inference = dict(_check_keys("inference", data, INFERENCE_KEYS))
    if model is not None:
        inference["model"] = model
    elif inference.get("model") is not None:
        inference["model"] = str(_resolve(search, inference["model"]))
    if inference.get("class") is not None and inference.get("model") is None:
        inference["module"] = str(inference.get("module") or "torchvision.models")
        inference["class"] = str(inference["class"])
        args = inference.get("args") or {}
        if not isinstance(args, dict):
            raise UsageError(f"inference.args: expected a mapping of the model's arguments, got {args!r}")
        inference["args"] = dict(args)
    elif inference.get("module") is not None and inference.get("model") is None:
        raise UsageError("inference: module needs class (e.g. module: torchvision.models, class: resnet18)")
    shape = inference.get("output_shape")
    if shape is not None and (not isinstance(shape, list) or not shape or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise UsageError(f"inference.output_shape: expected a list of positive integers, e.g. [1000], got {shape!r}")
    return inference


def parse_evaluation(data: Any, search: Path | tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``evaluation`` as the EVALUATORS registry takes it, and 3DB's ``classmap_path`` ({uid: class}), which
    the objects' labels come from rather than the evaluator."""
    evaluation = dict(_check_keys("evaluation", data, EVALUATION_KEYS))
    module = str(evaluation.get("module") or "classification")
    name = module if module.startswith("py:") else module.rsplit(".", 1)[-1]
    args = evaluation.get("args") or {}
    if not isinstance(args, dict):
        raise UsageError(f"evaluation.args: expected a mapping, got {args!r}")
    args = dict(args)
    classmap = None
    if args.get("classmap_path") is not None:
        classmap = _classmap(_resolve(search, args.pop("classmap_path")), _where(search))
    return {"module": name, "args": args}, classmap


def _json_file(path: Path, field: str, missing: str) -> Any:
    """The JSON a config field names; ``missing`` says where it was looked for."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{field}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{field}: {path} is not JSON ({exc})") from None


def _classmap(path: Path, where: str) -> dict[str, Any]:
    data = _json_file(path, "evaluation.args.classmap_path", f"{path.name} not found in {where}")
    if not isinstance(data, dict):
        raise InvalidInput(f"evaluation.args.classmap_path: {path} must map each object uid to a class index "
                           "(or a list of them)")
    return data


def _with_labels(objects: Any, classmap: dict[str, Any] | None) -> Any:
    """Toolbox-form objects without a label take theirs from a 3DB classmap, by id."""
    if classmap is None or not isinstance(objects, list):
        return objects
    return [{**o, "label": classmap[str(o["id"])]} if isinstance(o, dict) and "label" not in o
            and str(o.get("id")) in classmap else o for o in objects]


def _narrowed(section: str, data: Any, found: dict[str, Path]) -> list[str]:
    """The names a config keeps of those found in ROOT (all of them when it names none)."""
    if data is None:
        return list(found)
    if not isinstance(data, list) or not data or not all(isinstance(n, str) for n in data):
        raise UsageError(f"{section}: with a 3DB ROOT, a list of names to keep (of {', '.join(found)})")
    unknown = [n for n in data if n not in found]
    if unknown:
        raise UsageError(f"{section}: {', '.join(unknown)} not in ROOT; found {', '.join(found)}")
    return list(dict.fromkeys(data))


def root_objects(root: Path, data: Any, search: tuple[Path, ...], classmap: dict[str, Any] | None,
                 names: list[str] | None) -> list[ObjectSpec]:
    """ROOT/blender_models/<uid>.blend, one object each, labelled by the classmap (3DB); kept in Blender units.
    A list of mappings instead is the toolbox's own ``objects`` form."""
    if isinstance(data, list) and data and all(isinstance(o, dict) for o in data):
        return parse_objects(_with_labels(data, classmap), search, names)
    folder = root / MODEL_FOLDER
    found = {p.stem: p for p in sorted(folder.glob("*.blend"))}
    if not found:
        raise InvalidInput(f"{folder}: no <uid>.blend models (3DB's ROOT holds {MODEL_FOLDER}/*.blend)")
    out = []
    for uid in _narrowed("objects", data, found):
        if classmap is None or uid not in classmap:
            raise UsageError(f"object {uid!r} has no label: give evaluation.args.classmap_path, a JSON object "
                             f"mapping each uid in {folder} to its class index (or list of them)")
        out.append(ObjectSpec(id=uid, label=_label(classmap[uid], f"classmap[{uid!r}]", names), path=found[uid],
                              blender_units=True))
    return out


def root_environments(root: Path, data: Any, search: tuple[Path, ...]) -> list[EnvironmentSpec]:
    """ROOT/blender_environments/*.blend|*.hdr|*.exr, named by file name (3DB); a list of mappings instead is
    the toolbox's own ``environments`` form."""
    if isinstance(data, list) and data and all(isinstance(e, dict) for e in data):
        return parse_environments(data, search)
    folder = root / ENVIRONMENT_FOLDER
    found = {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in ENVIRONMENT_SUFFIXES} \
        if folder.is_dir() else {}
    if not found:
        raise InvalidInput(f"{folder}: no environments (3DB's ROOT holds {ENVIRONMENT_FOLDER}/*.blend|*.hdr|*.exr)")
    return [EnvironmentSpec(id=name, path=found[name]) for name in _narrowed("environments", data, found)]


def parse_policy(data: Any) -> dict[str, Any]:
    """``policy`` with 3DB's module paths mapped to registered names; ``samples`` given to 3DB's grid_search
    (published, rejected by 3DB) is read as ``samples_per_dim``, and a published policy that names no module
    but ``samples_per_dim`` (its base's module lost to the top-level merge) as the grid."""
    policy = data or {"module": "grid", "samples_per_dim": 5}
    if isinstance(policy, dict) and "module" not in policy and set(policy) == {"samples_per_dim"}:
        tolerate("policy without a module; samples_per_dim is the grid's, reading it as threedb.policies.grid_search")
        policy = {"module": "threedb.policies.grid_search", **policy}
    if not isinstance(policy, dict) or "module" not in policy:
        raise UsageError("policy: expected {module: grid, samples_per_dim: N} or {module: random, samples: N}")
    policy = dict(policy)
    if "seed" in policy and policy["seed"] is None:  # 3DB's default (unseeded); here the run's --seed decides
        del policy["seed"]
    module = str(policy["module"])
    if not module.startswith("py:"):
        policy["module"] = module.rsplit(".", 1)[-1].removesuffix("_search")
    if module.startswith("threedb.") and policy["module"] == "grid" and "samples" in policy:  # toolbox's grid: strict
        samples = policy.pop("samples")
        if "samples_per_dim" in policy:
            tolerate(f"grid policy given samples: {samples} beside samples_per_dim; ignoring samples")
        else:
            tolerate(f"grid policy given samples: {samples}; reading it as samples_per_dim: {samples}")
            policy["samples_per_dim"] = samples
    return policy


def parse_logging(data: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``logging`` and 3DB's ``logger_modules`` by last part (a list, or the docs' whitespace-separated block)."""
    logging = dict(_check_keys("logging", data, LOGGING_KEYS))
    if logging.get("root_dir") is not None:
        tolerate(f"logging.root_dir {logging['root_dir']!r} is not read (nor by 3DB): logs go to OUTDIR (--out)")
    logging.pop("root_dir", None)
    modules = logging.pop("logger_modules", None) or []
    if isinstance(modules, str):
        modules = modules.split()
    if not isinstance(modules, list):
        raise UsageError(f"logging.logger_modules: expected a list of modules, got {modules!r}")
    loggers = []
    for module in modules:
        name = str(module).rsplit(".", 1)[-1]
        if name not in LOGGERS:
            raise UsageError(f"logging.logger_modules: unknown logger {module!r}; valid: "
                             + ", ".join(f"threedb.result_logging.{n}" for n in LOGGERS))
        loggers.append(name)
    return logging, tuple(dict.fromkeys(loggers))


def _label_names(path: Path) -> list[str]:
    names = _json_file(path, "inference.label_map", f"{path} does not exist")
    if isinstance(names, dict):  # 3DB class maps: {index: name}
        names = [names[k] for k in sorted(names, key=lambda k: int(k))]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput(f"inference.label_map: {path} must hold a JSON array of class names")
    return names


def engine_fields(name: str) -> tuple[type, frozenset[str]]:
    from confidently.render.engines import engine_class

    try:
        cls = engine_class(name)
    except ImportError as exc:
        raise MissingBackend(f"render engine {name!r} is not available here ({exc}); try render_args.engine: null "
                             "for a pipeline check, or install 'confidently[render]'") from None
    return cls, frozenset(getattr(cls, "fields", frozenset()))


def check_engine(experiment: Experiment) -> None:
    """Refuse, before rendering, objects and control settings the chosen engine cannot draw."""
    cls, honoured = engine_fields(experiment.renderer)
    builtins = getattr(cls, "builtins", None)
    for obj in experiment.objects:
        if obj.builtin is not None and builtins is not None and obj.builtin not in builtins:
            raise UsageError(f"object {obj.id!r}: engine {experiment.renderer!r} has no built-in {obj.builtin!r}; "
                             f"choose {', '.join(builtins)}")
    suffixes = getattr(cls, "mesh_suffixes", None)
    for obj in experiment.objects:
        if obj.path is not None and suffixes is not None and obj.path.suffix.lower() not in suffixes:
            raise UsageError(f"object {obj.id!r}: engine {experiment.renderer!r} reads {', '.join(suffixes)} meshes, "
                             f"not {obj.path.suffix}; render with engine bpy (render_args.engine: "
                             "threedb.rendering.render_blender)")
    readable = getattr(cls, "environment_suffixes", None)
    for env in experiment.environments:
        if env.path is not None and readable is not None and env.path.suffix.lower() not in readable:
            raise UsageError(f"environment {env.id!r}: engine {experiment.renderer!r} reads environment maps "
                             f"({', '.join(readable)}), not {env.path.suffix} files; render with engine bpy "
                             "(render_args.engine: threedb.rendering.render_blender) or narrow `environments:` to "
                             "the maps")
    context = {"label": experiment.objects[0].label, "object": experiment.objects[0]}
    for setup in experiment.controls:
        if setup.cls.kind != "pre":
            continue
        control = setup.instantiate(experiment.root)
        candidates = {name: _candidates(s) for name, s in setup.settings.items()}
        baseline = {name: values[0] for name, values in candidates.items()}
        state = SceneState()  # the baseline itself: a control without parameters (denoiser) writes fields too
        control.apply(state, baseline, context)
        changed = state.changed_fields()
        for name, values in candidates.items():
            for value in values:
                state = SceneState()
                control.apply(state, {**baseline, name: value}, context)
                changed |= state.changed_fields()
        missing = sorted(changed - honoured - {"extra"})
        if missing:
            writers = [name for name, spec in setup.cls.params.items() if spec.field in missing]
            varied = [name for name in writers if setup.settings[name].mode != "fixed"]
            culprits = ", ".join(f"{setup.name}.{name}" for name in (varied or writers)) or setup.name
            raise UsageError(f"engine {experiment.renderer!r} cannot honour {culprits} (scene field "
                             f"{', '.join(missing)}); it honours {', '.join(sorted(honoured)) or 'nothing'}. Fix "
                             "the parameter at its neutral value, drop it, or choose another render_args.engine")


def _candidates(setting: Setting) -> list[Any]:
    if setting.mode == "fixed":
        return [setting.value]
    if setting.mode == "continuous":
        return [setting.low, setting.high, (setting.low + setting.high) / 2]
    return list(setting.values)
