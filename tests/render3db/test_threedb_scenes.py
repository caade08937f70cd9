"""3DB's scenes beyond the basics: a .blend environment's own lamps follow the ``light`` control (scaled and tinted
with its world; untouched at the defaults, as 3DB renders them), Mitsuba refuses .blend scenes when the config is
read, and a detection experiment runs through Cycles from the command line. The ROOT is built here with bpy;
renders are 32 px with 2 samples."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from tests.tools.test_render_3db_cli import ENV

BUILD = textwrap.dedent("""
    import math
    import sys
    from pathlib import Path
    import bpy

    root = Path(sys.argv[1])
    for sub in ("blender_models", "blender_environments", "resources"):
        (root / sub).mkdir(parents=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=0.5)
    bpy.context.active_object.name = "cube"
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_models" / "cube.blend"))
    bpy.ops.wm.read_factory_settings(use_empty=True)  # a dark world lit by one sun from the camera's side
    world = bpy.data.worlds.new("dark")
    world.use_nodes = True
    background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.01, 0.01, 0.01, 1.0)
    bpy.context.scene.world = world
    bpy.ops.object.light_add(type="SUN", rotation=(math.radians(60), 0, 0))
    bpy.context.active_object.data.energy = 1.0
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_environments" / "lamp.blend"))
""")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    pytest.importorskip("bpy")
    folder = tmp_path_factory.mktemp("scenes") / "ROOT"
    done = subprocess.run([sys.executable, "-c", BUILD, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "resources" / "classmap.json").write_text(json.dumps({"cube": 1}))
    return folder


def linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


@pytest.mark.render
def test_the_environments_lamps_follow_the_light_control(root):
    from confidently.render.engines.blender_engine import BlenderEngine
    from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs, SceneState

    engine = BlenderEngine()
    try:
        engine.load(ObjectSpec("cube", 1, path=root / "blender_models/cube.blend", blender_units=True),
                    EnvironmentSpec("lamp.blend", path=root / "blender_environments/lamp.blend"),
                    RenderArgs(resolution=32, samples=2))
        state = SceneState(rotation=(0.3, 0.0, 0.6))
        renders = {}
        for name, light, colour in (("saved", 1.0, (1.0, 1.0, 1.0)), ("double", 2.0, (1.0, 1.0, 1.0)),
                                    ("red", 1.0, (1.0, 0.0, 0.0)), ("again", 1.0, (1.0, 1.0, 1.0))):
            out = engine.render(replace(state, light=light, light_color=colour), seed=3)
            renders[name] = linear(out["rgb"].numpy().astype(np.float64))
            mask = out["segmentation"][0].numpy() >= 0
    finally:
        engine.close()
    saved = renders["saved"][:, mask]
    assert 0.05 < saved.mean() < 0.4  # lit by the sun, far from clipping
    # twice the lamp (and world): twice the light on the object, up to 8-bit quantisation
    assert np.allclose(renders["double"][:, mask], 2 * saved, rtol=0.05, atol=0.01)
    red = renders["red"][:, mask]
    assert np.allclose(red[0], saved[0], atol=0.01) and red[1:].max() < 0.01  # the lamp's light tinted red
    assert np.array_equal(renders["again"], renders["saved"])  # the defaults restore the file's own lamps


def test_mitsuba_refuses_blend_scenes_when_the_config_is_read(tmp_path, run_in_process):
    """No Blender needed: the engine is refused on the file names, before any file is opened."""
    (tmp_path / "studio.blend").write_bytes(b"stand-in: never opened")
    config = {"objects": [{"id": "ball", "builtin": "sphere", "label": 1}],
              "environments": [{"id": "studio", "path": "studio.blend"}],
              "render_args": {"engine": "mitsuba", "resolution": 32, "samples": 2}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    done = run_in_process("render-3db", "validate", "exp.yaml")
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert "environment 'studio'" in said and ".blend" in said and "engine bpy" in said
    config["environments"] = [{"id": "studio", "path": "studio.hdr"}]  # an environment map passes that check
    (tmp_path / "studio.hdr").write_bytes(b"stand-in")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    done = run_in_process("render-3db", "validate", "exp.yaml")
    assert done.returncode == 0, done.stderr
    # 3DB's ROOT holds .blend models, which Mitsuba cannot read either
    root = tmp_path / "ROOT"
    for sub, name in (("blender_models", "cube.blend"), ("blender_environments", "sky.hdr")):
        (root / sub).mkdir(parents=True)
        (root / sub / name).write_bytes(b"stand-in")
    (root / "resources").mkdir()
    (root / "resources" / "classmap.json").write_text(json.dumps({"cube": 1}))
    (tmp_path / "threedb.yaml").write_text(yaml.safe_dump({
        "evaluation": {"module": "threedb.evaluators.classification",
                       "args": {"classmap_path": "./resources/classmap.json"}},
        "render_args": {"engine": "threedb.rendering.render_blender"}, "controls": []}))
    done = run_in_process("render-3db", "validate", root, "threedb.yaml", "--renderer", "mitsuba")
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "object 'cube'" in said and ".blend" in said and "engine bpy" in said


@pytest.mark.render
def test_a_detection_experiment_runs_through_cycles_from_the_command_line(root, tmp_path):
    from confidently.io.artifacts import ArtifactRows
    from confidently.render3db.evaluators import DetectionEvaluator

    config = {
        "inference": {"module": "torchvision.models.detection", "class": "fasterrcnn_mobilenet_v3_large_320_fpn",
                      "resolution": [64, 64], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
                      "args": {"weights": None, "weights_backbone": None, "num_classes": 3, "box_score_thresh": 0.0,
                               "box_detections_per_img": 20}},
        "evaluation": {"module": "threedb.evaluators.detection",
                       "args": {"classmap_path": "./resources/classmap.json", "iou_threshold": 0.1,
                                "nms_threshold": 0.5, "max_num_boxes": 5, "min_precision": 0.0, "min_recall": 0.0}},
        "render_args": {"engine": "threedb.rendering.render_blender", "resolution": 32, "samples": 2},
        "policy": {"module": "threedb.policies.grid_search", "samples_per_dim": 2},
        "controls": [{"module": "threedb.controls.blender.orientation", "rotation_x": 0, "rotation_y": 0,
                      "rotation_z": "(0, 1.5)"}],
        "logging": {"logger_modules": ["threedb.result_logging.json_logger"]},
    }
    (tmp_path / "detection.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run(["render-3db", "run", str(root), "detection.yaml", "out", "--images-shard",
                           "out/renders.safetensors"], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["renderer"]["engine"] for r in records} == {"bpy"}
    shard = ArtifactRows(tmp_path / "out/renders.safetensors")
    judge = DetectionEvaluator(iou_threshold=0.1, nms_threshold=0.5, max_num_boxes=5, min_recall=0.0)
    for record in records:
        assert record["output_type"] == "bboxes" and record["is_valid"] is True  # the cube is in the frame
        assert 1 <= len(record["boxes"]) <= 5 and all(len(box) == 6 for box in record["boxes"])
        assert all(0 <= record[key] <= 1 for key in ("precision", "recall", "precision_nolabel", "recall_nolabel"))
        seg = shard.row("segmentation", record["segmentation"]["index"])
        assert set(seg.unique().tolist()) == {-1, 1}  # the lamp-lit cube, label 1; the scene is background
        boxes = torch.tensor(record["boxes"], dtype=torch.float64)
        again = judge.evaluate_boxes({"boxes": boxes[:, :4], "scores": boxes[:, 4], "labels": boxes[:, 5].long()},
                                     seg, (1, 1))
        assert {k: again[k] for k in ("precision", "recall", "precision_nolabel", "recall_nolabel")} == \
            {k: record[k] for k in ("precision", "recall", "precision_nolabel", "recall_nolabel")}


@pytest.mark.render
def test_a_builtin_occluder_is_sized_by_a_blender_unit_object(root):
    """3DB's occluders are files; the built-in stand-ins take the object's size (radius = scale × its radius), so
    beside a 0.5-unit cube they cover the share of it the ratio asks for, not the whole frame."""
    from confidently.render.engines.blender_engine import BlenderEngine
    from confidently.render.scene import EnvironmentSpec, ObjectSpec, Occluder, RenderArgs, SceneState

    engine = BlenderEngine()
    try:
        engine.load(ObjectSpec("cube", 1, path=root / "blender_models/cube.blend", blender_units=True),
                    EnvironmentSpec("grey", solid=(0.4, 0.4, 0.4)), RenderArgs(resolution=32, samples=1))
        state = SceneState(rotation=(0.3, 0.0, 0.6))
        alone = float((engine.render(state, seed=3)["segmentation"] >= 0).sum())
        occluded = []
        for ratio in (0.1, 0.8):
            out = engine.render(replace(state, occluder=Occluder(ratio, 0.3, 1.0, 1, builtin="sphere")), seed=3)
            occluded.append(1 - float((out["segmentation"] >= 0).sum()) / alone)
    finally:
        engine.close()
    assert occluded[0] < 0.3 and occluded[1] > 0.4 and occluded[1] > occluded[0] + 0.2, occluded
