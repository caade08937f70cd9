"""The null engine: every SceneState field shows in the pixels; deterministic; masks and geometry behave."""

from __future__ import annotations

import math

import pytest
import torch
from confidently.render.engines import engine_class
from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs, SceneState


def engine_for(builtin="mug", environment=None, resolution=48, **args):
    engine = engine_class("null")()
    engine.load(ObjectSpec(id=builtin, label=4, builtin=builtin, color=(0.8, 0.3, 0.2)),
                environment or EnvironmentSpec(id="grey", solid=(0.5, 0.5, 0.5)),
                RenderArgs(resolution=resolution, samples=8, with_uv=True, with_depth=True, **args))
    return engine


def test_outputs_shapes_ranges_and_determinism():
    engine = engine_for()
    out = engine.render(SceneState(), seed=3)
    assert out["rgb"].shape == (3, 48, 48) and out["alpha"].shape == (1, 48, 48)
    assert out["uv"].shape == (2, 48, 48) and out["depth"].shape == (1, 48, 48)
    assert float(out["rgb"].min()) >= 0 and float(out["rgb"].max()) <= 1
    seg = out["segmentation"]
    assert seg.dtype == torch.int32 and set(seg.unique().tolist()) == {-1, 4}
    assert torch.equal(seg >= 0, out["alpha"] > 0.5)
    again = engine.render(SceneState(), seed=3)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert not torch.equal(out["rgb"], engine.render(SceneState(), seed=4)["rgb"])  # the seed is the sample noise


CHANGES = {
    "view_point": (0.7, -0.7, 0.5), "zoom": 1.6, "focal_length": 20.0, "aperture": 2.0, "frame_shift": (0.3, -0.2),
    "rotation": (0.3, 0.2, 1.0), "offset": (0.2, 0.0, 0.3), "aim": (0.3, 0.0, 0.2), "scale": 0.6,
    "texture": torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)),
    "light": 1.7, "light_color": (1.0, 0.6, 0.3),
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_scene_field_changes_the_image(field):
    engine = engine_for()
    assert field in engine.fields
    base = engine.render(SceneState(), seed=0)["rgb"]
    changed = engine.render(SceneState(**{field: CHANGES[field]}), seed=0)["rgb"]
    assert float((changed - base).abs().mean()) > 1e-3


def test_geometry_zoom_shift_and_symmetry():
    engine = engine_for("sphere", resolution=64)
    areas = [float(engine.render(SceneState(zoom=z), 0)["alpha"].mean()) for z in (0.6, 0.8, 1.0, 1.3)]
    assert areas == sorted(areas) and areas[0] < areas[-1]
    mask = engine.render(SceneState(), 0)["segmentation"][0] >= 0
    rows, cols = torch.nonzero(mask, as_tuple=True)
    assert rows.min() > 0 and cols.min() > 0 and rows.max() < 63 and cols.max() < 63  # fits with a margin at zoom 1
    shifted = engine.render(SceneState(frame_shift=(0.5, 0.5), zoom=0.5), 0)["segmentation"][0] >= 0
    ys, xs = torch.nonzero(shifted, as_tuple=True)
    assert abs(xs.float().mean().item() / 32 - 1 - 0.5) < 0.15 and abs(1 - ys.float().mean().item() / 32 - 0.5) < 0.15
    turned = engine.render(SceneState(rotation=(0, 0, 1.2)), 0)["segmentation"][0] >= 0
    assert (mask ^ turned).float().mean() < 0.01  # a sphere's silhouette ignores heading
    mug = engine_for("mug", resolution=64)
    front = mug.render(SceneState(), 0)["segmentation"][0] >= 0
    side = mug.render(SceneState(rotation=(0, 0, math.pi / 2)), 0)["segmentation"][0] >= 0
    assert (front ^ side).float().mean() > 0.01  # a mug's does not


def test_procedural_and_file_backdrops_and_meshes(tmp_path):
    from confidently.io.images import save_image

    busy = engine_for(environment=EnvironmentSpec(id="c", procedural="checker:6")).render(SceneState(), 0)["rgb"]
    plain = engine_for().render(SceneState(), 0)["rgb"]
    assert float((busy - plain).abs().mean()) > 0.05
    save_image(torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(1)), tmp_path / "bg.png")
    photo = engine_for(environment=EnvironmentSpec(id="p", path=tmp_path / "bg.png")).render(SceneState(), 0)
    assert photo["rgb"].std() > 0.05
    (tmp_path / "tet.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n")
    engine = engine_class("null")()
    engine.load(ObjectSpec(id="tet", label=0, path=tmp_path / "tet.obj"), EnvironmentSpec(id="w", solid=(1, 1, 1)),
                RenderArgs(resolution=32, samples=1))
    assert 0.02 < float(engine.render(SceneState(), 0)["alpha"].mean()) < 0.9


def test_the_real_engines_camera_looks_at_its_aim_and_focuses_on_the_object():
    import numpy as np
    from confidently.render.engines.procedural import camera_pose

    state = SceneState(view_point=(0.6, -0.8, 0.4), zoom=0.7, offset=(0.5, -0.3, 0.4), aim=(0.5, -0.3, 0.4))
    pose = camera_pose(state)
    towards = np.asarray(state.aim) - pose.origin
    assert abs(towards @ pose.right) < 1e-9 and abs(towards @ pose.up) < 1e-9 and towards @ pose.forward > 0
    assert abs(pose.focus_distance - np.linalg.norm(towards)) < 1e-9
