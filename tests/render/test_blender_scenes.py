"""3DB's scenes on the bpy engine: objects kept in Blender units (the camera frames them whatever their size, while
offsets are in Blender units) and .blend environments opened as whole scenes (world, lamps, meshes). The files are
built here with bpy, in a child process; renders are 32 px."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs, SceneState

pytest.importorskip("bpy")
pytestmark = pytest.mark.render

BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bpy

    folder = Path(sys.argv[1])
    for name, size in (("small", 1.0), ("large", 3.0)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.mesh.primitive_cube_add(size=size)
        bpy.context.active_object.name = name
        bpy.ops.wm.save_as_mainfile(filepath=str(folder / f"{name}.blend"))
    bpy.ops.wm.read_factory_settings(use_empty=True)  # a studio: blue world, a red floor under z = -0.5, a sun
    world = bpy.data.worlds.new("studio")
    world.use_nodes = True
    background = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    background.inputs["Color"].default_value = (0.05, 0.1, 0.8, 1.0)
    bpy.context.scene.world = world
    bpy.ops.mesh.primitive_plane_add(size=60, location=(0, 0, -0.5))
    floor = bpy.data.materials.new("floor")
    floor.use_nodes = True
    floor.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.9, 0.02, 0.02, 1.0)
    bpy.context.active_object.data.materials.append(floor)
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 10))
    bpy.context.active_object.data.energy = 4.0
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "studio.blend"))
""")
GREY = EnvironmentSpec("grey", solid=(0.5, 0.5, 0.5))
ARGS = RenderArgs(resolution=32, samples=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    done = subprocess.run([sys.executable, "-c", BUILD, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.fixture(scope="module")
def engine():
    from confidently.render.engines.blender_engine import BlenderEngine

    engine = BlenderEngine()
    yield engine
    engine.close()


def footprint(engine, state: SceneState) -> tuple[int, float]:
    """The object's pixel count and the column of its centroid."""
    mask = (engine.render(state, seed=1)["segmentation"][0] >= 0).numpy()
    return int(mask.sum()), float(np.nonzero(mask)[1].mean())


def test_blender_units_frame_any_size_but_offsets_are_blender_units(engine, files):
    found = {}
    for name in ("small", "large"):
        engine.load(ObjectSpec(name, 1, path=files / f"{name}.blend", blender_units=True), GREY, ARGS)
        area, column = footprint(engine, SceneState(zoom=0.5))  # far enough back that both stay in the frame
        moved_area, moved = footprint(engine, SceneState(zoom=0.5, offset=(1.0, 0.0, 0.0)))  # 1 unit to the right
        found[name] = area, moved - column
        assert abs(moved_area - area) <= 0.2 * area
    (small_area, small_shift), (large_area, large_shift) = found["small"], found["large"]
    assert small_area > 20 and abs(small_area - large_area) <= 0.1 * small_area  # zoom 1 frames either size
    assert large_shift > 1 and small_shift > 2.5 * large_shift  # the same unit is 3× more of the small cube


def test_normalised_objects_ignore_their_blender_size(engine, files):
    masks = []
    for name in ("small", "large"):
        engine.load(ObjectSpec(name, 1, path=files / f"{name}.blend"), GREY, ARGS)
        masks.append(engine.render(SceneState(offset=(0.5, 0.0, 0.0)), seed=1)["segmentation"])
    assert np.array_equal(masks[0].numpy(), masks[1].numpy())


def test_a_blend_environment_brings_its_world_lamps_and_floor(engine, files):
    engine.load(ObjectSpec("small", 1, path=files / "small.blend", blender_units=True),
                EnvironmentSpec("studio.blend", path=files / "studio.blend"), ARGS)
    out = engine.render(SceneState(), seed=1)
    rgb, seg = out["rgb"].numpy(), out["segmentation"][0].numpy()
    obj = seg >= 0
    assert 50 < obj.sum() < 32 * 32 / 2  # the floor is scenery: not in the object's segmentation
    below = np.nonzero(obj.any(1))[0].max() + 1  # rows under the object show the lit red floor
    r, g, b = rgb[:, below:].reshape(3, -1).mean(1)
    assert r > 0.3 and r > 2 * g and r > 2 * b
    r, g, b = rgb[:, 0].reshape(3, -1).mean(1)  # the top row looks above the horizon: the blue world
    assert b > 2 * r
    engine.load(ObjectSpec("small", 1, path=files / "small.blend", blender_units=True), GREY, ARGS)
    rgb = engine.render(SceneState(), seed=1)["rgb"].numpy()  # the next pair starts from an empty scene again
    assert np.allclose(rgb[:, -1], rgb[:, -1, :1], atol=0.02)  # grey everywhere under the object
