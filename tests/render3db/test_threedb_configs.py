"""3DB's own experiments: `render-3db run ROOT CONFIG OUTDIR` over a ROOT laid out as 3DB's (built here with bpy),
configs in 3DB's format, run from another folder; each 3DB key reaches the run; published configs that 3DB's own
code rejects are read with a warning."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from confidently.errors import UsageError
from confidently.io.images import decode_file

from tests.tools.test_render_3db_cli import ENV

BUILD_ROOT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bpy
    import numpy as np

    root = Path(sys.argv[1])
    for sub in ("blender_models", "blender_environments", "resources"):
        (root / sub).mkdir(parents=True)
    for uid in ("cube", "ball"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if uid == "cube":
            bpy.ops.mesh.primitive_cube_add(size=0.2)
        else:
            bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1)
        bpy.context.active_object.name = uid
        bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_models" / f"{uid}.blend"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_environments" / "studio.blend"))
    for name, kind in (("sky.hdr", "HDR"), ("dusk.exr", "OPEN_EXR")):
        image = bpy.data.images.new(name, 16, 8, float_buffer=True)
        pixels = np.ones((8, 16, 4), np.float32)
        pixels[..., 0] = np.linspace(0, 1, 16)[None]
        image.pixels.foreach_set(pixels.ravel())
        image.filepath_raw, image.file_format = str(root / "blender_environments" / name), kind
        image.save()
""")
BASE = {  # 3DB's unit-test base config, shrunk: a torchvision classifier, its classmap, Blender, random search
    "inference": {"module": "torchvision.models", "class": "resnet18", "output_shape": [10],
                  "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                  "resolution": [32, 32], "label_map": "./resources/labels.json",
                  "args": {"pretrained": False, "num_classes": 10}},
    "evaluation": {"module": "threedb.evaluators.classification",
                   "args": {"classmap_path": "./resources/classmap.json", "topk": 2}},
    "render_args": {"engine": "threedb.rendering.render_blender", "resolution": 32, "samples": 2},
    "policy": {"module": "threedb.policies.random_search", "samples": 3},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    pytest.importorskip("bpy")
    folder = tmp_path_factory.mktemp("threedb") / "ROOT"
    done = subprocess.run([sys.executable, "-c", BUILD_ROOT, str(folder)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "resources" / "classmap.json").write_text(json.dumps({"cube": 3, "ball": [1, 6]}))
    (folder / "resources" / "labels.json").write_text(json.dumps([f"class{i}" for i in range(10)]))
    return folder


@pytest.fixture
def config(tmp_path):
    """Write a 3DB config (inheriting BASE through base_config) in its own folder; return its path."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))

    def write(text: str, name: str = "exp.yaml"):
        (folder / name).write_text("base_config: base.yaml\n" + textwrap.dedent(text))
        return folder / name

    return write


def render_3db(cwd, *args, env=None):
    (cwd).mkdir(exist_ok=True)
    return subprocess.run(["render-3db", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env or ENV, timeout=300)


def lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.render
def test_a_3db_folder_and_config_run_unchanged_from_another_folder(root, config, tmp_path):
    path = config("""
        environments: [sky.hdr, dusk.exr]
        policy: {module: threedb.policies.grid_search, samples_per_dim: 2}
        controls:
          - module: threedb.controls.blender.orientation
            rotation_x: 0
            rotation_y: 0
            rotation_z: (-3.14, 3.14)
        logging:
          logger_modules:
            threedb.result_logging.image_logger
            threedb.result_logging.json_logger
            threedb.result_logging.tb_logger
    """)
    done = render_3db(tmp_path / "elsewhere", "run", root, path, tmp_path / "out")  # ./resources/... found under ROOT
    assert done.returncode == 0, done.stderr
    rows = lines((tmp_path / "out" / "results.jsonl").read_text())
    assert len(rows) == 2 * 2 * 2  # objects × narrowed environments × samples_per_dim
    assert {(r["object"], r["label"], tuple(r.get("labels", []))) for r in rows} == {("cube", 3, ()),
                                                                                     ("ball", 1, (1, 6))}
    assert {r["environment"] for r in rows} == {"sky.hdr", "dusk.exr"}
    assert sorted({r["render_args"]["orientation.rotation_z"] for r in rows}) == [-3.14, 3.14]
    assert all(len(r["prediction"]) == 2 and r["renderer"]["engine"] == "bpy" for r in rows)  # topk, engine
    for r in rows:  # the image logger's renders, at render_args.resolution
        assert decode_file(tmp_path / "out" / r["image"]).shape[-2:] == (32, 32)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["renders"] == 8
    assert len(list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # the tb_logger's


def test_3db_discovery_and_policies_reach_the_plan(root, config, tmp_path):
    grid = config("""
        policy: {module: threedb.policies.grid_search, samples: 3}
        controls:
          - module: threedb.controls.blender.orientation
            rotation_x: 0
            rotation_y: [0, 1]
            rotation_z: (-3, 3)
    """, "grid.yaml")
    done = render_3db(tmp_path / "cwd", "validate", root, grid)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["objects"] == ["ball", "cube"] and plan["environments"] == ["dusk.exr", "sky.hdr", "studio.blend"]
    assert plan["jobs"] == 2 * 3 * 3 * 3  # every object × environment; samples read as samples_per_dim: 3 × 3
    assert "grid policy given samples: 3" in done.stderr

    random = config("""
        objects: [cube]
        policy: {module: threedb.policies.random_search, samples: 4, seed: SEED}
        controls:
          - module: threedb.controls.blender.orientation
            rotation_x: 0
            rotation_y: 0
            rotation_z: (-3, 3)
    """, "random.yaml")
    text = random.read_text()
    points = {}
    for seed in (7, 7, 8):
        random.write_text(text.replace("SEED", str(seed)))
        done = render_3db(tmp_path / "cwd", "run", root, random, tmp_path / f"unused{seed}", "--dry-run",
                          "--renderer", "null")
        assert done.returncode == 0, done.stderr
        rows = lines(done.stdout)
        assert len(rows) == 4 * 3 and {r["object"] for r in rows} == {"cube"}  # samples × environments
        points.setdefault(seed, []).append([r["render_args"]["orientation.rotation_z"] for r in rows])
    assert points[7][0] == points[7][1] != points[8][0]
    assert not (tmp_path / "unused7").exists()  # a dry run writes nothing into OUTDIR


def test_pretrained_weights_come_only_from_the_local_hub_cache(root, config, tmp_path):
    path = config("""
        inference:
          module: torchvision.models
          class: resnet18
          resolution: 32
          args: {pretrained: True}
        controls: [{module: threedb.controls.blender.orientation}]
    """)
    env = {**ENV, "TORCH_HOME": str(tmp_path / "torch")}
    done = render_3db(tmp_path / "cwd", "run", root, path, tmp_path / "out", "--renderer", "null", env=env)
    assert done.returncode == 3, done.stderr
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in done.stderr.replace("\n", "")


def test_unknown_3db_keys_fail_with_the_valid_ones(root, config, tmp_path):
    path = config("""
        inference: {module: torchvision.models, class: resnet18, uid_to_labels: x.json}
    """)
    done = render_3db(tmp_path / "cwd", "run", root, path, tmp_path / "out", "--renderer", "null")
    assert done.returncode == 2
    assert "uid_to_labels" in done.stderr and "output_shape" in done.stderr and "label_map" in done.stderr
    done = render_3db(tmp_path / "cwd", "run", root, path)  # neither form
    assert done.returncode == 2 and "ROOT CONFIG OUTDIR" in done.stderr


def test_published_configs_3db_rejects_load_with_a_warning(root, config, tmp_path, monkeypatch):
    from confidently.render3db.config import load_experiment, parse_controls
    from confidently.render3db.evaluators import EVALUATORS

    monkeypatch.chdir(tmp_path)
    path = config("""
        evaluation:
          module: threedb.evaluators.detection
          args: {iou_threshold: 0.5, classmap_path: ./resources/classmap.json}
        controls: [{module: threedb.controls.blender.imagenet_c_corruption, corruption_name: fog, severity: 2}]
    """)
    with pytest.warns(UserWarning) as caught:
        experiment = load_experiment(path, threedb_root=root, renderer="null")
    assert "imagenet_c_corruption" in " ".join(str(w.message) for w in caught)
    assert [c.name for c in experiment.controls] == ["imagenet_c"]
    assert experiment.evaluation == {"module": "detection", "args": {"iou_threshold": 0.5}}
    with pytest.warns(UserWarning) as caught:  # the evaluator fills in what the config left out, as 3DB does
        EVALUATORS.get("detection")(**experiment.evaluation["args"])
    said = " ".join(str(w.message) for w in caught)
    assert "max_num_boxes" in said and "nms_threshold" in said
    assert {o.id: o.label for o in experiment.objects} == {"ball": [1, 6], "cube": 3}
    assert all(o.blender_units for o in experiment.objects)  # 3DB's objects keep Blender units
    pytest.importorskip("confidently.render3db.controls.mug_liquid")
    liquid = parse_controls([{"module": "threedb.controls.blender.mug_liquid", "ratio_milk": 0, "ratio_coffee": 0}],
                            root)
    assert liquid[0].name == "mug_liquid"


@pytest.mark.parametrize("order", [("scale", "camera"), ("camera", "scale")])
def test_the_camera_frames_the_object_as_the_controls_before_it_scaled_it(tmp_path, order):
    """3DB's camera fits the object as it stands when the camera control runs: a scale listed before it is
    re-fitted (the object fills the frame as at scale 1), one listed after it shrinks the object in the image."""
    from confidently.render3db import RenderWorker, WorkerSettings, load_experiment
    from confidently.render3db.jobs import Job

    (tmp_path / "exp.yaml").write_text(
        "objects: [{id: ball, builtin: sphere, label: 1}]\n"
        "environments: [{id: grey, solid: [0.5, 0.5, 0.5]}]\n"
        "render_args: {engine: null, resolution: 48, samples: 4, with_segmentation: true}\n"
        "controls:\n" + "".join(f"  - {{module: {name}}}\n" for name in order))
    worker = RenderWorker(WorkerSettings(load_experiment(tmp_path / "exp.yaml"), evaluate=False, keep_images=True))
    camera = {"camera.view_point_x": 0.0, "camera.view_point_y": -1.0, "camera.view_point_z": 0.3,
              "camera.zoom_factor": 1.0, "camera.aperture": None, "camera.focal_length": 50.0}

    def area(factor):
        job = Job(order=0, id="j", pair=0, environment="grey", object="ball", label=1, index=0, point=(),
                  discrete=(), args={**camera, "scale.factor": factor}, seed=7)
        out, _ = worker.render(job)
        return int((out["segmentation"] >= 0).sum())

    full, half = area(1.0), area(0.5)
    looked = worker.render(Job(order=0, id="j", pair=0, environment="grey", object="ball", label=1, index=0, point=(),
                               discrete=(), seed=7, args={**camera, "scale.factor": 1.0, "camera.view_point_x": 0.0,
                                                          "camera.view_point_y": 0.0, "camera.view_point_z": 0.0}))
    diagonal = worker.render(Job(order=0, id="j", pair=0, environment="grey", object="ball", label=1, index=0,
                                 point=(), discrete=(), seed=7, args={**camera, "scale.factor": 1.0,
                                                                      "camera.view_point_x": 1.0,
                                                                      "camera.view_point_y": 1.0,
                                                                      "camera.view_point_z": 1.0}))
    assert torch.equal(looked[0]["rgb"], diagonal[0]["rgb"])  # 3DB's unit tests' (0, 0, 0): from (1, 1, 1)
    assert full > 200
    if order[0] == "scale":
        assert abs(half / full - 1) < 0.15, (half, full)  # re-fitted: the same share of the frame
    else:
        assert abs(half / full - 0.25) < 0.08, (half, full)  # half the radius: a quarter of the area


def test_3db_policy_arguments_read_as_3db_reads_them():
    from confidently.render3db.config import parse_policy

    # random_search's default seed is None (unseeded in 3DB): the run's --seed then decides, as without one
    assert parse_policy({"module": "threedb.policies.random_search", "samples": 2, "seed": None}) == \
        {"module": "random", "samples": 2}
    with pytest.warns(UserWarning, match="samples_per_dim is the grid's"):  # a child config's policy lost its module
        assert parse_policy({"samples_per_dim": 3}) == {"module": "grid", "samples_per_dim": 3}
    with pytest.raises(UsageError, match="policy: expected"):  # anything else without a module is still refused
        parse_policy({"samples": 3})
