"""A config in the shape of 3DB's unit tests (``examples/unit_tests/camera_focus.yaml``: ``base_config: base.yaml``,
one camera control by module path, the image and JSON loggers) renders through Blender with
`render-3db run ROOT CONFIG OUTDIR`, render for render: the camera leaves ``aperture`` out, so, as in 3DB, the grid
searches f/1 to f/32 and the far wall behind the object is blurred at f/1 and sharp at f/32. The ROOT (a cube and a
.blend environment with a checkered wall) is built here with bpy; 2 renders at 32 px with 4 samples."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from confidently.io.images import decode_file

BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bpy

    root = Path(sys.argv[1])
    for sub in ("blender_models", "blender_environments", "resources"):
        (root / sub).mkdir(parents=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(size=0.2)
    bpy.context.active_object.name = "cube"
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_models" / "cube.blend"))
    bpy.ops.wm.read_factory_settings(use_empty=True)  # a checkered wall far behind the object, glowing by itself
    bpy.context.scene.world = bpy.data.worlds.new("dark")
    bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 8, 0), rotation=(1.5708, 0, 0))
    material = bpy.data.materials.new("checks")
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    coords, checks = nodes.new("ShaderNodeTexCoord"), nodes.new("ShaderNodeTexChecker")
    checks.inputs["Scale"].default_value = 2.0
    checks.inputs["Color1"].default_value = (1, 1, 1, 1)
    checks.inputs["Color2"].default_value = (0, 0, 0, 1)
    glow, out = nodes.new("ShaderNodeEmission"), nodes.new("ShaderNodeOutputMaterial")
    links.new(coords.outputs["Object"], checks.inputs["Vector"])
    links.new(checks.outputs["Color"], glow.inputs["Color"])
    links.new(glow.outputs["Emission"], out.inputs["Surface"])
    bpy.context.active_object.data.materials.append(material)
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "blender_environments" / "wall.blend"))
""")
BASE = {  # 3DB's unit-test base.yaml, shrunk: an untrained torchvision classifier, its class map, Blender
    "inference": {"module": "torchvision.models", "class": "resnet18", "output_shape": [10],
                  "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                  "resolution": [32, 32], "args": {"pretrained": False, "num_classes": 10}},
    "evaluation": {"module": "threedb.evaluators.classification",
                   "args": {"classmap_path": "./resources/classmap.json", "topk": 1}},
    "render_args": {"engine": "threedb.rendering.render_blender", "resolution": 32, "samples": 4},
    "policy": {"module": "threedb.policies.grid_search", "samples_per_dim": 2},
}
CAMERA_FOCUS = {  # camera_focus.yaml's camera looks along -y at a fixed zoom and lens; its aperture is left out
    "base_config": "base.yaml",
    "controls": [{"module": "threedb.controls.blender.camera", "view_point_x": 0.0, "view_point_y": -1.0,
                  "view_point_z": 0.0, "zoom_factor": 0.5, "focal_length": 100.0}],
    "logging": {"logger_modules": ["threedb.result_logging.image_logger", "threedb.result_logging.json_logger"]},
}


@pytest.mark.render
def test_a_3db_unit_test_config_renders_through_blender_with_3dbs_aperture_range(tmp_path, run_tool):
    pytest.importorskip("bpy")
    root = tmp_path / "ROOT"
    done = subprocess.run([sys.executable, "-c", BUILD, str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (root / "resources" / "classmap.json").write_text(json.dumps({"cube": 3}))
    (tmp_path / "examples").mkdir()
    for name, config in (("base.yaml", BASE), ("camera_focus.yaml", CAMERA_FOCUS)):
        (tmp_path / "examples" / name).write_text(yaml.safe_dump(config, sort_keys=False))

    done = run_tool("render-3db", "run", root, "examples/camera_focus.yaml", "out")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert [r["render_args"]["camera.aperture"] for r in records] == [1.0, 32.0]  # 3DB's range, 2 per dimension
    assert {(r["object"], r["environment"], r["label"], r["renderer"]["engine"]) for r in records} == {
        ("cube", "wall.blend", 3, "bpy")}
    contrast = []
    for record in records:
        image = decode_file(tmp_path / "out" / record["image"])
        assert image.shape == (3, 32, 32)
        contrast.append(float(image.mean(0)[:8].std()))  # the wall's checks above the cube
    blurred, sharp = contrast
    assert sharp > 0.35 and blurred < 0.8 * sharp, contrast  # depth of field at f/1, next to none at f/32
