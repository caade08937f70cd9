"""Every example config 3DB publishes (3db/3db: ``examples/*.yaml``, ``examples/unit_tests/*.yaml``,
``examples/paper_experiments/*.yaml``, 28 files with the two ``base.yaml``) validates unchanged over a 3DB ROOT.

Each is written here in the same shape — its keys, module names, argument names and value forms (``(a, b)``
strings, lists, ``!!python/tuple``, ``"(0.9)"``), with small values — and its search space is stated as 3DB builds
it (continuous ranges, discrete value sets): validation must count 3DB's renders (``grid_search``:
samples_per_dim ** continuous × discrete sizes; ``random_search``: samples; per object × environment pair),
warn exactly where 3DB's own current code would refuse the file, and name the file when it fails. The ROOT holds
stand-ins of the same names for every asset a config refers to; validation reads no .blend, so no bpy.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import warnings

import pytest
import yaml

from tests.tools.test_render_3db_cli import ENV

OBJECTS, ENVIRONMENTS = ("ball", "mug"), ("studio.blend", "sky.hdr")
PAIRS = len(OBJECTS) * len(ENVIRONMENTS)
SKINS = ["skin-crocodile.blend", "skin-elephant.blend", "skin-leopard.blend", "skin-tiger.blend", "skin-zebra.blend"]
RESOURCES = {  # ROOT-relative stand-ins: 3DB's class maps (uid → ImageNet/COCO index) and label maps
    "resources/uid_to_IN.json": {"ball": 805, "mug": [504, 968]},
    "resources/ycb_to_IN.json": {"ball": 805, "mug": 504},
    "resources/imagenet_mapping.json": {str(i): f"class{i}" for i in range(1000)},
    "data_collection/uid_to_IN.json": {"ball": 37, "mug": 47},
    "data_collection/coco_mapping.json": {str(i): f"coco{i}" for i in range(91)},
}

CLASSIFIER = {"module": "torchvision.models", "label_map": "./resources/imagenet_mapping.json", "class": "resnet18",
              "output_shape": [1000], "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
              "resolution": [32, 32], "args": {"pretrained": True}}
BLENDER = {"engine": "threedb.rendering.render_blender", "resolution": 32, "samples": 2}
IMAGE_LOGGER = {"logger_modules": ["threedb.result_logging.image_logger"]}
BOTH_LOGGERS = {"logger_modules": ["threedb.result_logging.image_logger", "threedb.result_logging.json_logger"]}
C = "threedb.controls.blender."
DENOISER = {"module": C + "denoiser"}
STILL_CAMERA = {"aperture": 5.0, "focal_length": 100.0, "module": C + "camera", "view_point_x": 0.0,
                "view_point_y": 0.0, "view_point_z": 0.0, "zoom_factor": 1}
PAPER_CAMERA = {"module": C + "camera", "view_point_x": 0, "view_point_y": -0.5, "view_point_z": "(0.2, 2)",
                "zoom_factor": "(0.7, 1.3)", "aperture": 8, "focal_length": 50}
PAPER_POSITION = {"module": C + "position", "offset_X": 0, "offset_Y": 0.3, "offset_Z": 0.26666}
PAPER_TURN = {"module": C + "orientation", "rotation_X": 0, "rotation_Y": 0, "rotation_Z": "(-3.14, 2.35)"}


class PyTuple(list):
    """A range 3DB's scale example writes as ``!!python/tuple`` (PyYAML's dump of a Python tuple)."""


class Dumper(yaml.SafeDumper):
    pass


Dumper.add_representer(PyTuple, lambda d, v: d.represent_sequence("tag:yaml.org,2002:python/tuple", list(v)))


def classification(classmap: str) -> dict:
    return {"module": "threedb.evaluators.classification",
            "args": {"classmap_path": f"./resources/{classmap}", "topk": 1}}


def grid(n: int, key: str = "samples_per_dim") -> dict:
    return {"module": "threedb.policies.grid_search", key: n}


def random(n: int, module: str = "threedb.policies.random_search") -> dict:
    return {"module": module, "samples": n}


UNIT_BASE = {"inference": CLASSIFIER, "evaluation": classification("uid_to_IN.json"), "render_args": BLENDER,
             "policy": random(3)}
PAPER_BASE = {"inference": CLASSIFIER, "evaluation": classification("ycb_to_IN.json"), "render_args": BLENDER,
              "policy": grid(2, "samples"), "logging": BOTH_LOGGERS}


def unit(*controls, logging=IMAGE_LOGGER) -> dict:
    body = {"base_config": "base.yaml", "controls": list(controls)}
    return {**body, "logging": logging} if logging is not None else body


def paper(*controls, policy=None) -> dict:
    return {"base_config": "base.yaml", **({"policy": policy} if policy else {}), "controls": list(controls)}


# 3DB file → (the config in its shape, 3DB's search space: (continuous dims, discrete sizes), what must be warned)
PUBLISHED = {
    "basic.yaml": ({
        "inference": CLASSIFIER, "evaluation": classification("uid_to_IN.json"), "render_args": BLENDER,
        "policy": random(1), "controls": [DENOISER], "logging": {"root_dir": "logs/", **BOTH_LOGGERS}},
        (0, []), ["logging.root_dir"]),
    "object_detection.yaml": ({
        "inference": {"module": "torchvision.models.detection", "class": "retinanet_resnet50_fpn",
                      "label_map": "./data_collection/coco_mapping.json", "output_shape": [100, 6],
                      "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, "resolution": [64, 64],
                      "uid_to_targets": "./data_collection/uid_to_IN.json", "args": {"pretrained": True}},
        "evaluation": {"module": "threedb.evaluators.detection", "args": {"iou_threshold": 0.5}},
        "render_args": {"engine": "threedb.rendering.blender", "resolution": 64, "with_segmentation": True,
                        "samples": 2},
        "policy": random(2),
        "controls": [{"module": "background", "S": 0.4, "V": 0.4},
                     {"module": "camera", "view_point_x": "(-.5, .5)", "view_point_y": -1,
                      "view_point_z": "(-.2, 1.)", "zoom_factor": "(0.3, 1.2)", "aperture": 8, "focal_length": 50}]},
        (4, []), ["uid_to_targets", "threedb.rendering.blender"]),
    "randomize_obj_loc.yaml": ({
        "inference": CLASSIFIER, "evaluation": classification("uid_to_IN.json"), "render_args": BLENDER,
        "policy": random(2),
        "controls": [{"module": C + "obj_loc_in_frame", "x_shift": "(-1.0, 1.0)", "y_shift": "(-1.0, 1.0)"},
                     DENOISER],
        "logging": {"root_dir": "logs/", **BOTH_LOGGERS}},
        (2, []), ["logging.root_dir"]),
    "randomize_viewpoint.yaml": ({
        "inference": CLASSIFIER, "evaluation": classification("uid_to_IN.json"), "render_args": BLENDER,
        "policy": random(2),
        "controls": [{"module": C + "camera", "view_point_x": "(-0.5, 0.5)", "view_point_y": -1,
                      "view_point_z": "(-0.2, 1.0)"}, DENOISER],
        "logging": BOTH_LOGGERS},
        (5, []), []),  # view_point_x, _z, and 3DB's defaults of zoom_factor, aperture and focal_length
    "paper_experiments/base.yaml": (PAPER_BASE, (0, []), ["grid policy given samples"]),
    "paper_experiments/composition.yaml": (paper(
        DENOISER, PAPER_POSITION, {"module": C + "material"},
        {"module": C + "orientation", "rotation_X": "(-3.14, 2.35)", "rotation_Y": "(0.14, 3.35)",
         "rotation_Z": "(-3.14, 2.35)"},
        {**PAPER_CAMERA, "zoom_factor": "(0.9)"},
        {"module": C + "imagenet_c_corruption",
         "corruption_name": ["shot_noise", "impulse_noise", "defocus_blur", "glass_blur"], "severity": 1}),
        (4, [len(SKINS) + 1, 4]), ["grid policy given samples", "imagenet_c_corruption", "offset_X as offset_x"]),
    "paper_experiments/heatmaps.yaml": (paper(
        DENOISER, {**PAPER_POSITION, "offset_Z": 0.4}, {**PAPER_TURN, "rotation_Z": "(-3.14, 2.9321531433504737)"},
        {"module": C + "pin_to_ground", "z_ground": 0.23}, {**PAPER_CAMERA, "view_point_z": "(0, 2)"},
        policy=grid(2)), (3, []), ["rotation_X as rotation_x"]),
    "paper_experiments/imagenet-C.yaml": (paper(
        DENOISER, PAPER_POSITION, PAPER_TURN, PAPER_CAMERA,
        {"module": C + "imagenet_c_corruption", "corruption_name": "snow", "severity": 1}),
        (3, []), ["grid policy given samples", "imagenet_c_corruption"]),
    "paper_experiments/mug_backgrounds.yaml": (paper(
        DENOISER, {"module": C + "background", "H": 0, "S": 0, "V": 1},
        {**PAPER_CAMERA, "view_point_x": "(-0.5, 0.5)", "view_point_y": "(-0.5, 0.5)", "view_point_z": "(-0.5, 0.5)"},
        policy=grid(2)), (4, []), []),
    "paper_experiments/mug_liquid.yaml": (paper(
        {"module": C + "mug_liquid"}, DENOISER, PAPER_POSITION, PAPER_TURN, PAPER_CAMERA, policy=grid(2)),
        (5, []), ["both 0"]),
    "paper_experiments/texture-bias.yaml": (paper(
        {"module": C + "material"}, DENOISER, {**PAPER_POSITION, "offset_Z": 0.4},
        {**PAPER_TURN, "rotation_Z": "(-3.14, 2.5132741228718345)"}, {"module": C + "pin_to_ground", "z_ground": 0.23},
        {**PAPER_CAMERA, "view_point_z": "(0, 2)"}, policy=grid(2)),
        (3, [len(SKINS) + 1]), ["rotation_X as rotation_x"]),
    "unit_tests/base.yaml": (UNIT_BASE, (0, []), []),
    "unit_tests/background.yaml": (unit({"module": C + "background", "H": "(0., 1.)", "S": "(0.2, 1.)", "V": 1}),
                                   (2, []), []),
    "unit_tests/camera.yaml": (unit(DENOISER, {
        "aperture": [1.0, 32.0], "focal_length": [10, 400], "module": C + "camera", "view_point_x": [-1.0, 1.0],
        "view_point_y": [-1.0, 1.0], "view_point_z": [0.0, 1.0], "zoom_factor": [0.5, 2.0]}), (6, []), []),
    "unit_tests/camera_focus.yaml": (unit({**STILL_CAMERA, "aperture": "(1, 10)", "focal_length": "(10, 20)"}),
                                     (2, []), []),
    "unit_tests/camera_viewpoint.yaml": (unit({**STILL_CAMERA, "view_point_x": "(-1., 1.)",
                                               "view_point_y": "(-1., 1.)", "view_point_z": "(0., 1.)"},
                                              logging=None), (3, []), []),
    "unit_tests/camera_zoom.yaml": (unit({**STILL_CAMERA, "zoom_factor": "(0.8, 1.2)"},
                                         logging={"root_dir": "docs/_static/logs/camera_zoom", **IMAGE_LOGGER}),
                                    (1, []), ["logging.root_dir"]),
    "unit_tests/denoiser.yaml": (unit(STILL_CAMERA, DENOISER), (0, []), []),
    "unit_tests/imagenet_c.yaml": (unit({"module": C + "imagenet_c", "corruption_name": [
        "defocus_blur", "pixelate", "saturate", "elastic_transform", "gaussian_noise"], "severity": 3}),
        (0, [5]), []),
    "unit_tests/material.yaml": (unit(STILL_CAMERA, DENOISER, {"module": C + "material",
                                                               "replacement_material": SKINS}), (0, [5]), []),
    "unit_tests/no_denoiser.yaml": (unit(STILL_CAMERA), (0, []), []),
    "unit_tests/obj_loc_in_frame.yaml": (unit(STILL_CAMERA, DENOISER, {
        "module": C + "obj_loc_in_frame", "x_shift": [-1.0, 1.0], "y_shift": [-1, 1.0]}), (2, []), []),
    "unit_tests/occlusion.yaml": (unit(STILL_CAMERA, DENOISER, {
        "direction": list(range(8)), "module": C + "occlusion", "occluder": [1], "occlusion_ratio": [0.1, 1.0],
        "scale": [0.25, 1.0], "zoom": [0.1, 0.4]}), (3, [8]), []),
    "unit_tests/orientation.yaml": (unit(STILL_CAMERA, DENOISER, {
        "module": C + "orientation", "rotation_x": [-3.14, 3.14], "rotation_y": [-3.14, 3.14],
        "rotation_z": [-3.14, 3.14]}, logging=None), (3, []), []),
    "unit_tests/pin_to_ground.yaml": (unit(STILL_CAMERA, DENOISER, {"module": C + "pin_to_ground",
                                                                    "z_ground": [0.0, 0.03]}), (1, []), []),
    "unit_tests/pointlight.yaml": (unit(STILL_CAMERA, DENOISER, {
        "S": [0, 1], "V": [0, 1], "dir_x": [-1, 1], "dir_y": [-1, 1], "dir_z": [0, 1], "distance": [5, 20],
        "intensity": [1000, 10000], "module": C + "pointlight"}, logging=None), (8, []), []),  # and H's default
    "unit_tests/position.yaml": (unit(STILL_CAMERA, DENOISER, {
        "module": C + "position", "offset_x": [-0.02, 0.02], "offset_y": [-0.02, 0.02], "offset_z": [-0.02, 0.02]},
        logging=None), (3, []), []),
    "unit_tests/scale.yaml": (unit(STILL_CAMERA, DENOISER, {"factor": PyTuple([0.25, 1.0]),
                                                            "module": C + "scale"}), (1, []), []),
}
EITHER_WAY = PyTuple([-1, 1])
# other versions of these files in 3DB's history (``name@version``): PyYAML's dump of Python tuples, with anchors
# where one tuple is used twice; its former package name and class-map key; an example since removed
OLDER = {
    "unit_tests/occlusion.yaml@tuples": (unit(STILL_CAMERA, DENOISER, {
        "direction": list(range(8)), "module": C + "occlusion", "occluder": list(range(6)),
        "occlusion_ratio": PyTuple([0.1, 1.0]), "scale": PyTuple([0.25, 1.0]), "zoom": PyTuple([0.1, 0.4])}),
        (3, [8, 6]), []),
    "paper_experiments/mug_liquid.yaml@bare": (paper(*(
        {**c, "module": c["module"].rsplit(".", 1)[-1]} for c in (
            {"module": C + "mug_liquid"}, DENOISER, PAPER_POSITION, PAPER_TURN, PAPER_CAMERA)),
        policy={"samples_per_dim": 2}), (5, []), ["policy without a module", "both 0"]),
    "unit_tests/camera.yaml@twice": (unit(STILL_CAMERA, DENOISER, {
        "aperture": PyTuple([1.0, 32.0]), "focal_length": PyTuple([10, 400]), "module": C + "camera",
        "view_point_x": EITHER_WAY, "view_point_y": EITHER_WAY, "view_point_z": PyTuple([0.0, 1.0]),
        "zoom_factor": PyTuple([0.5, 2.0])}), (6, []), ["given twice"]),  # every value the first's, 2**6 times
    "unit_tests/position.yaml@tuples": (unit(STILL_CAMERA, DENOISER, {
        "module": C + "position", "offset_X": (both := PyTuple([-1.0, 1.0])), "offset_Y": both, "offset_Z": both}),
        (3, []), ["offset_X as offset_x"]),
    "unit_tests/pointlight.yaml@tuples": (unit(STILL_CAMERA, DENOISER, {
        "S": (same := PyTuple([0, 1])), "V": same, "dir_x": EITHER_WAY, "dir_y": EITHER_WAY, "dir_z": same,
        "distance": PyTuple([5, 20]), "intensity": [1000, 10000], "module": C + "pointlight"}), (8, []), []),
    "object_detection.yaml@sandbox": ({
        "inference": {"module": "torchvision.models.detection", "class": "retinanet_resnet50_fpn",
                      "output_shape": [100, 6], "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
                      "resolution": [64, 64], "uid_to_logits": "./data_collection/uid_to_IN.json",
                      "args": {"pretrained": True}},
        "evaluation": {"module": "sandbox.evaluators.detection", "args": {"iou_threshold": 0.5}},
        "render_args": {"engine": "sandbox.rendering.blender", "resolution": 64, "with_segmentation": True,
                        "samples": 2},
        "policy": random(2, "sandbox.policies.random_search"),
        "controls": [{"module": "background", "S": 0.4, "V": 0.4},
                     {"module": "camera", "view_point_x": "(-.5, .5)", "view_point_y": -1,
                      "view_point_z": "(-.2, 1.)", "zoom_factor": "(0.3, 1.2)", "aperture": 8, "focal_length": 50}]},
        (4, []), ["sandbox", "uid_to_logits", "threedb.rendering.blender"]),
    "very_simple_grid_search.yaml@pose": ({
        "inference": {**CLASSIFIER, "uid_to_logits": "./resources/ycb_to_IN.json"},
        "render_args": {"engine": "sandbox.rendering.blender", "resolution": 32, "samples": 2},
        "policy": grid(2), "controls": [{"module": "pose"}, {"module": "denoiser"}]},
        (3, []), ["sandbox", "uid_to_logits", "'pose'"]),
}
ALL = {**PUBLISHED, **OLDER}
RUN_FOR_REAL = ("paper_experiments/composition.yaml",)  # the most tolerated; each run is ~5 s of CPU in imports


def dump(config: dict) -> str:
    return yaml.dump(config, Dumper=Dumper, sort_keys=False)


def expected_renders(config: dict, space: tuple[int, list[int]], base: dict | None) -> int:
    """3DB's count (its policies' hint_scheduler) per pair: the grid's samples_per_dim (``samples`` read so)."""
    policy = config.get("policy") or (base or {}).get("policy")
    continuous, discrete = space
    if policy.get("module", "grid_search").endswith("grid_search"):
        n = policy.get("samples_per_dim", policy.get("samples"))
        return PAIRS * n ** continuous * math.prod(discrete)
    return PAIRS * policy["samples"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A 3DB ROOT of stand-ins: models, environments, materials, occluders and resource files by 3DB's names."""
    folder = tmp_path_factory.mktemp("published") / "ROOT"
    for sub, names in (("blender_models", [f"{o}.blend" for o in OBJECTS]), ("blender_environments", ENVIRONMENTS),
                       ("blender_control_material", SKINS), ("ood_objects", [f"occluder{i}.blend" for i in range(6)])):
        (folder / sub).mkdir(parents=True)
        for name in names:
            (folder / sub / name).write_bytes(b"")
    for name, content in RESOURCES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    return folder


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """The configs in 3DB's layout (examples/, examples/unit_tests/, examples/paper_experiments/)."""
    folder = tmp_path_factory.mktemp("published") / "examples"
    for name, (config, _, _) in ALL.items():
        path = folder / name.split("@")[0].replace(".yaml", f"{name.partition('@')[2]}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(config))
    return folder


def config_path(examples, name):
    return examples / name.split("@")[0].replace(".yaml", f"{name.partition('@')[2]}.yaml")


def base_of(name: str) -> dict | None:
    if "unit_tests/" in name:
        return UNIT_BASE
    return PAPER_BASE if "paper_experiments/" in name else None


def test_the_published_set_is_complete():
    folders = {n.rsplit("/", 1)[0] if "/" in n else "examples" for n in PUBLISHED}
    assert len(PUBLISHED) == 28 and folders == {"examples", "unit_tests", "paper_experiments"}


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_published_3db_config_validates_unchanged(name, root, examples, monkeypatch):
    from confidently.render3db import count_jobs, search_space
    from confidently.render3db.config import load_experiment

    config, space, warned = ALL[name]
    monkeypatch.chdir(examples.parent)  # neither ROOT nor the config's folder: paths resolve as in 3DB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        experiment = load_experiment(config_path(examples, name), threedb_root=root)
    said = " | ".join(str(w.message) for w in caught)
    for words in warned:  # what 3DB's current code refuses is read, and said
        assert words in said, f"{name}: expected a warning about {words!r}, got {said!r}"
    if not warned:
        assert not caught, f"{name}: 3DB reads it as it is, but the loader warned {said!r}"
    assert experiment.renderer == "bpy"
    assert sorted(o.id for o in experiment.objects) == list(OBJECTS)
    assert sorted(e.id for e in experiment.environments) == sorted(ENVIRONMENTS)
    found = search_space(experiment.controls)
    assert found.shape() == space, f"{name}: {found.describe()}"
    assert count_jobs(experiment) == expected_renders(config, space, base_of(name)), name


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A torch hub cache holding a resnet18 checkpoint of the name torchvision downloads (random weights)."""
    import torch
    from torchvision.models import resnet18

    home = tmp_path_factory.mktemp("torch")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    return home


@pytest.mark.parametrize("name", RUN_FOR_REAL)
def test_render_3db_validate_accepts_the_published_config(name, root, examples, hub):
    config, space, warned = PUBLISHED[name]
    done = subprocess.run(["render-3db", "validate", str(root), str(config_path(examples, name))],
                          cwd=examples.parent, capture_output=True, text=True, timeout=120,
                          env={**ENV, "TORCH_HOME": str(hub)})
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"
    plan = json.loads(done.stdout)
    assert plan["valid"] and plan["renderer"] == "bpy" and plan["pairs"] == PAIRS
    assert plan["jobs"] == expected_renders(config, space, base_of(name))
    assert all(words in done.stderr for words in warned), done.stderr


PI = math.pi
# 3DB's defaults, from its control classes' continuous_dims/discrete_dims (threedb/controls/blender/*.py): what it
# searches for an argument a config omits; occluder and replacement_material depend on ROOT (counted below)
THREEDB_DEFAULTS = {
    "background": {"H": (0, 1), "S": (0, 1), "V": (0, 1)},
    "camera": {"view_point_x": (-1, 1), "view_point_y": (-1, 1), "view_point_z": (0, 1), "zoom_factor": (0.5, 2),
               "aperture": (1, 32), "focal_length": (10, 400)},
    "denoiser": {},
    "imagenet_c": {"severity": [1, 2, 3, 4, 5], "corruption_name": [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "frost", "fog", "speckle_noise", "gaussian_blur", "spatter", "saturate", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression"]},
    "material": {"replacement_material": len(SKINS) + 1},
    "mug_liquid": {"ratio_milk": (0, 1), "ratio_coffee": (0, 1)},
    "obj_loc_in_frame": {"x_shift": (-1, 1), "y_shift": (-1, 1)},
    "occlusion": {"occlusion_ratio": (0.1, 1.0), "zoom": (0.1, 0.4), "scale": (0.25, 1),
                  "direction": list(range(8)), "occluder": 6},
    "orientation": {"rotation_x": (-PI, PI), "rotation_y": (-PI, PI), "rotation_z": (-PI, PI)},
    "pin_to_ground": {"z_ground": (0, 1)},
    "pointlight": {"H": (0, 1), "S": (0, 1), "V": (0, 1), "intensity": (1000, 10000), "distance": (5, 20),
                   "dir_x": (-1, 1), "dir_y": (-1, 1), "dir_z": (0, 1)},
    "position": {"offset_x": (-1, 1), "offset_y": (-1, 1), "offset_z": (-1, 1)},
    "scale": {"factor": (0.25, 1)},
}


def searched(setting):
    """A setting as THREEDB_DEFAULTS states it: a range, a value list, or (ROOT's files) their count."""
    if setting.mode == "continuous":
        return (setting.low, setting.high)
    return list(setting.values) if setting.param not in ("occluder", "replacement_material") else len(setting.values)


@pytest.mark.parametrize("form", ["module path", "bare name"])
def test_a_3db_config_that_omits_arguments_searches_3dbs_defaults(form, root, tmp_path):
    from confidently.render3db.config import load_experiment

    controls = [{"module": (C if form == "module path" else "") + name} for name in THREEDB_DEFAULTS]
    (tmp_path / "all.yaml").write_text(dump({**UNIT_BASE, "controls": controls}))
    experiment = load_experiment(tmp_path / "all.yaml", threedb_root=root)
    found = {c.name: {name: searched(s) for name, s in c.settings.items()} for c in experiment.controls}
    assert found == THREEDB_DEFAULTS


def test_the_toolbox_form_keeps_its_own_defaults(tmp_path):
    from confidently.render3db.config import load_experiment

    def controls(*entries):
        (tmp_path / "own.yaml").write_text(dump({
            "objects": [{"id": "ball", "builtin": "sphere", "label": 1}],
            "environments": [{"id": "grey", "solid": [0.5, 0.5, 0.5]}],
            "render_args": {"engine": "null", "resolution": 32}, "policy": {"module": "grid", "samples_per_dim": 2},
            "controls": list(entries)}))
        return load_experiment(tmp_path / "own.yaml").controls

    camera, corruption = controls({"module": "camera"}, {"module": "imagenet_c", "severity": 1})
    assert camera.settings["aperture"].mode == "fixed" and camera.settings["aperture"].value is None  # no blur
    assert list(corruption.settings["corruption_name"].values) == sorted(THREEDB_DEFAULTS["imagenet_c"][
        "corruption_name"])
    (camera,) = controls({"module": C + "camera"})  # a 3DB module path is 3DB's form, also beside the toolbox's keys
    assert searched(camera.settings["aperture"]) == (1, 32)


def test_a_control_given_twice_grids_as_3dbs_grid_search(root, tmp_path):
    """3DB's SearchSpace lists every entry's ranges as coordinates (later ones set the value, fixed values win) and
    keys discrete values by (control, parameter): its grid renders each point as many times as coordinates repeat."""
    from confidently.render3db import count_jobs, iter_jobs
    from confidently.render3db.config import load_experiment

    controls = [{"module": C + "occlusion", "occlusion_ratio": "(0.1, 0.5)", "zoom": 0.2, "scale": 0.5,
                 "direction": [0, 1, 2], "occluder": 0},
                {"module": C + "position", "offset_x": "(0, 1)", "offset_y": 0, "offset_z": 0},
                {"module": C + "occlusion", "occlusion_ratio": "(0.6, 1.0)", "zoom": 0.3, "scale": "(0.25, 1)",
                 "direction": 5, "occluder": 0}]
    (tmp_path / "twice.yaml").write_text(dump({**UNIT_BASE, "policy": grid(2), "controls": controls}))
    with pytest.warns(UserWarning, match="given twice"):
        experiment = load_experiment(tmp_path / "twice.yaml", threedb_root=root)
    # 3DB: continuous (ratio, offset_x, ratio, scale), discrete (direction: 3 values, then fixed by the later entry)
    assert count_jobs(experiment) == PAIRS * 2 ** 4 * 3
    first_pair = [{k: round(v, 9) for k, v in job.args.items()} for job in iter_jobs(experiment, 0) if job.pair == 0]
    expected = [{"occlusion.occlusion_ratio": round(0.6 + 0.4 * u[2], 9), "occlusion.zoom": 0.3, "occlusion.scale": 0.5,
                 "occlusion.direction": 5, "occlusion.occluder": 0, "position.offset_x": u[1], "position.offset_y": 0,
                 "position.offset_z": 0} for u in itertools.product((0.0, 1.0), repeat=4) for _ in range(3)]
    assert first_pair == expected
