"""The real render engines (Mitsuba 3 and Blender's Cycles) against the SceneState contract: determinism, every
declared field visible in the pixels, camera geometry (spec §5.1 items 4–9), the UV convention shared with
unadv-patch, file meshes, and the two engines agreeing on the same scene. Tiny renders (32–48 px, 4 spp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from confidently.render.engines import engine_class
from confidently.render.engines.procedural import BUILTIN_OBJECTS, builtin_mesh
from confidently.render.scene import EnvironmentSpec, ObjectSpec, Occluder, PointLight, RenderArgs, SceneState

from tests.render.textures import quadrants

pytestmark = pytest.mark.render

MODULES = {"mitsuba": "mitsuba", "bpy": "bpy"}
WHITE = EnvironmentSpec("white", solid=(1.0, 1.0, 1.0))
CHECKER = EnvironmentSpec("checker", procedural="checker")
SMALL = RenderArgs(resolution=32, samples=4, with_uv=True, with_depth=True)
LABEL = 7


def require(name: str):
    """Skip unless the engine's package imports (and, for Mitsuba, its LLVM variant loads)."""
    module = pytest.importorskip(MODULES[name])
    if name == "mitsuba":
        from confidently.errors import MissingBackend
        from confidently.render.mitsuba_renderer import load_mitsuba

        try:
            load_mitsuba("cpu")
        except MissingBackend as exc:
            pytest.skip(str(exc))
    return module


@pytest.fixture(scope="module", params=["mitsuba", "bpy"])
def engine(request):
    require(request.param)
    return engine_class(request.param)()


def load(engine, builtin: str, environment=WHITE, args=SMALL, color=(0.8, 0.5, 0.3)):
    engine.load(ObjectSpec(builtin, LABEL, builtin=builtin, color=color), environment, args)
    return engine


def mask(out) -> np.ndarray:
    return (out["segmentation"][0] == LABEL).numpy()


def test_same_state_and_seed_render_identical_pixels(engine):
    load(engine, "mug", CHECKER)
    state = SceneState(view_point=(0.6, -1.0, 0.4), rotation=(0.1, 0.0, 0.7), texture=torch.rand(3, 8, 8))
    first, again = engine.render(state, seed=5), engine.render(state, seed=5)
    for key in ("rgb", "alpha", "segmentation", "uv", "depth"):
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["rgb"], engine.render(state, seed=6)["rgb"])  # the seed drives the samples
    # another state in between leaves nothing behind (the next render starts from its own state)
    engine.render(SceneState(zoom=2.0, light=0.3, texture=torch.rand(3, 4, 4)), seed=5)
    assert torch.equal(first["rgb"], engine.render(state, seed=5)["rgb"])
    assert first["rgb"].shape == (3, 32, 32) and first["rgb"].dtype == torch.float32
    assert 0 <= first["rgb"].min() and first["rgb"].max() <= 1
    assert first["segmentation"].dtype == torch.int32 and first["uv"].shape == (2, 32, 32)


def test_textures_swap_in_and_out_without_leftovers(engine, capfd):
    load(engine, "cube")
    plain, one, two = SceneState(), SceneState(texture=torch.rand(3, 8, 8)), SceneState(texture=torch.rand(3, 8, 8))
    renders = {key: engine.render(state, seed=0)["rgb"] for key, state in (("plain", plain), ("one", one),
                                                                          ("two", two))}
    assert not torch.equal(renders["one"], renders["two"])  # same size, new texels: the renderer sees them
    assert torch.equal(engine.render(one, seed=0)["rgb"], renders["one"])
    assert torch.equal(engine.render(plain, seed=0)["rgb"], renders["plain"])  # the object's colour is back
    if engine.name == "bpy":
        import bpy

        images = len(bpy.data.images)
        for _ in range(3):
            engine.render(two, seed=1)
        assert len(bpy.data.images) == images  # pass images are removed after reading
    assert capfd.readouterr().out == ""  # stdout carries records: neither renderer may write to it


VARIED = {
    "view_point": (0.8, -0.6, 0.6), "zoom": 1.6, "focal_length": 24.0, "aperture": 1.0, "frame_shift": (0.3, 0.2),
    "rotation": (0.0, 0.0, 1.2), "offset": (0.3, 0.0, 0.1), "aim": (0.2, 0.0, 0.3), "scale": 0.6,
    "texture": quadrants(8), "light": 0.4,
    "light_color": (1.0, 0.4, 0.4), "ground": 0.5, "denoise": True,
    "point_light": PointLight((1.0, 1.0, 1.0), 3000.0, 5.0, (1.0, -0.5, 0.5)),
    "occluder": Occluder(0.5, 0.3, 0.8, 1, builtin="cube"),
}
NEEDS_FILES = {"material", "liquid"}  # a material .blend, a "liquid" material: tests/render3db/test_threedb_controls.py


SETTING = {"aperture": {"focal_length": 135.0}}  # depth of field shows better through a long lens


def test_every_declared_field_changes_the_image(engine):
    assert engine.fields - NEEDS_FILES <= set(VARIED), "a declared field this test does not vary"
    load(engine, "mug", CHECKER)
    for name in sorted(engine.fields - NEEDS_FILES):
        base = engine.render(SceneState(**SETTING.get(name, {})), seed=1)["rgb"]
        changed = engine.render(SceneState(**SETTING.get(name, {}), **{name: VARIED[name]}), seed=1)["rgb"]
        assert (changed - base).abs().mean() > 1e-3, name


def test_object_area_grows_with_zoom_and_fits_the_frame_at_zoom_one(engine):
    load(engine, "cube", args=RenderArgs(resolution=48, samples=4))
    areas = [mask(engine.render(SceneState(zoom=z), seed=0)).sum() for z in (0.5, 0.75, 1.0, 1.3, 1.7)]
    assert all(a < b for a, b in zip(areas, areas[1:], strict=False)), areas
    for view_point in ((0.0, -1.0, 0.3), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)):  # corners of the cube stick out most
        rows, cols = np.nonzero(mask(engine.render(SceneState(view_point=view_point), seed=0)))
        assert len(rows) > 48 * 48 * 0.2
        assert rows.min() >= 1 and cols.min() >= 1 and rows.max() <= 46 and cols.max() <= 46, view_point


def test_frame_shift_moves_the_object_centre_there(engine):
    load(engine, "sphere", args=RenderArgs(resolution=48, samples=4))
    for shift in ((0.0, 0.0), (0.45, -0.3), (-0.4, 0.4)):
        rows, cols = np.nonzero(mask(engine.render(SceneState(zoom=0.6, frame_shift=shift), seed=0)))
        x, y = (cols.mean() + 0.5) / 48 * 2 - 1, 1 - (rows.mean() + 0.5) / 48 * 2
        assert abs(x - shift[0]) < 0.1 and abs(y - shift[1]) < 0.1, (shift, x, y)


def test_a_sphere_ignores_rotation_about_z_and_a_mug_does_not(engine):
    def masks(builtin):
        load(engine, builtin, args=RenderArgs(resolution=48, samples=4))
        return [mask(engine.render(SceneState(rotation=(0.0, 0.0, a)), seed=0)) for a in (0.0, 0.9, 2.5)]

    sphere, mug = masks("sphere"), masks("mug")
    for other in sphere[1:]:
        assert (other != sphere[0]).sum() <= 0.01 * sphere[0].sum()
    for other in mug[1:]:
        assert (other != mug[0]).sum() > 0.05 * mug[0].sum()


def test_segmentation_is_the_label_on_the_object_and_minus_one_elsewhere(engine):
    load(engine, "hammer", CHECKER)
    out = engine.render(SceneState(view_point=(0.5, -1.0, 0.2)), seed=2)
    seg, alpha = out["segmentation"][0], out["alpha"][0]
    assert set(seg.unique().tolist()) == {-1, LABEL}
    assert (seg[alpha == 0] == -1).all() and (seg[alpha == 1] == LABEL).all()
    assert ((seg == LABEL) == (alpha > 0.5)).float().mean() > 0.97
    depth = out["depth"][0]
    assert (depth[alpha == 0] == 1).all() and (depth[alpha == 1] < 0.6).all()  # max_depth 10, camera ≈ 3.2 away


def test_texture_quadrants_land_where_the_uv_convention_says(engine):
    """Rectangle seen frontally: u runs left→right, v bottom→top, texel row = floor(v·s): the tensor's first rows
    (red, green) show at the bottom."""
    load(engine, "rectangle", args=RenderArgs(resolution=32, samples=4, with_uv=True))
    texture = quadrants(8)
    out = engine.render(SceneState(view_point=(0.0, -1.0, 0.0), texture=texture), seed=0)
    rgb = out["rgb"]
    expected = {(24, 10): (1, 0, 0), (24, 21): (0, 1, 0), (8, 10): (0, 0, 1), (8, 21): (1, 1, 0)}  # (row, col)
    for (row, col), colour in expected.items():
        seen = rgb[:, row - 1:row + 2, col - 1:col + 2].mean((1, 2))
        assert torch.allclose(seen, torch.tensor(colour, dtype=torch.float32), atol=0.25), ((row, col), seen)
    # the UV output predicts every covered pixel's texel (what unadv-patch's gather_texels relies on)
    from confidently.render.mitsuba_renderer import gather_texels

    load(engine, "cube", args=RenderArgs(resolution=32, samples=4, with_uv=True))
    texture = quadrants(2)  # texels much larger than pixels: few pixels straddle two
    out = engine.render(SceneState(view_point=(0.4, -1.0, 0.5), texture=texture), seed=0)
    rgb, covered = out["rgb"], out["alpha"][0] > 0.999
    pure = ((rgb > 0.8) | (rgb < 0.2)).all(0) & covered  # pixels inside one texel (not mixing two colours)
    assert pure.sum() > 0.6 * covered.sum()
    for tensor, agreement in ((texture, lambda a: a > 0.97), (texture.flip(1), lambda a: a < 0.1)):  # rows matter
        predicted = gather_texels(tensor, out["uv"])[:, pure] > 0.5
        assert agreement(((rgb[:, pure] > 0.5) == predicted).all(0).float().mean())


def test_builtin_meshes_face_outwards():
    for name in BUILTIN_OBJECTS:
        mesh = builtin_mesh(name)
        corners = mesh.positions[mesh.faces]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        assert (np.einsum("ij,ij->i", normal, mesh.normals[mesh.faces].mean(1)) > 0).all(), name
        assert mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1


def test_the_cube_is_mitsubas_cube():
    mi = require("mitsuba")
    params = mi.traverse(mi.load_dict({"type": "cube"}))
    ours = builtin_mesh("cube")
    assert np.allclose(np.array(params["vertex_positions"]).reshape(-1, 3), ours.positions)
    assert np.allclose(np.array(params["vertex_texcoords"]).reshape(-1, 2), ours.uvs)
    assert np.array_equal(np.array(params["faces"]).reshape(-1, 3), ours.faces)


def write_ply(path, mesh):
    """An ASCII PLY with (s, t) texture coordinates, which Mitsuba reads as they are (t = Mitsuba's v)."""
    header = ["ply", "format ascii 1.0", f"element vertex {len(mesh.positions)}"]
    header += [f"property float {name}" for name in ("x", "y", "z", "nx", "ny", "nz", "s", "t")]
    header += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices", "end_header"]
    rows = [" ".join(f"{v:.6f}" for v in row) for row in np.concatenate([mesh.positions, mesh.normals, mesh.uvs], 1)]
    rows += ["3 " + " ".join(str(i) for i in face) for face in mesh.faces]
    path.write_text("\n".join(header + rows) + "\n")


def write_obj(path, mesh):
    """An OBJ as Blender writes one: v = 0 at the image's bottom, so the file's v is 1 − Mitsuba's v."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.positions]
    lines += [f"vt {u:.6f} {1 - v:.6f}" for u, v in mesh.uvs]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.normals]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}/{i + 1}" for i in face) for face in mesh.faces]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_a_mesh_file_renders_like_the_builtin_it_came_from(engine, tmp_path, suffix):
    mesh = builtin_mesh("mug")
    path = tmp_path / f"mug{suffix}"
    writer = write_obj if suffix == ".obj" else write_ply
    writer(path, mesh.transformed(np.eye(3) * 3.0, (5.0, -2.0, 1.0)))  # normalisation undoes size and place
    args = RenderArgs(resolution=32, samples=4, with_uv=True)
    state = SceneState(rotation=(0.0, 0.0, 0.8), texture=quadrants(8))
    builtin = load(engine, "mug", args=args).render(state, seed=0)
    engine.load(ObjectSpec("file", LABEL, path=path), WHITE, args)
    from_file = engine.render(state, seed=0)
    assert (mask(builtin) != mask(from_file)).sum() <= 0.02 * mask(builtin).sum()
    both = mask(builtin) & mask(from_file)
    assert (builtin["uv"][:, both] - from_file["uv"][:, both]).abs().mean() < 0.02


def test_blender_reads_glb_and_blend_files_like_the_builtin(tmp_path):
    bpy = require("bpy")

    engine = engine_class("bpy")()
    args = RenderArgs(resolution=32, samples=4)
    state = SceneState(rotation=(0.3, 0.0, 0.8))
    load(engine, "mug", args=args)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "mug.blend"))  # holds an object named "mug"
    bpy.ops.export_scene.gltf(filepath=str(tmp_path / "mug.glb"), export_format="GLB")
    reference = mask(engine.render(state, seed=0))
    for name in ("mug.blend", "mug.glb"):
        engine.load(ObjectSpec(name, LABEL, path=tmp_path / name), WHITE, args)
        assert (mask(engine.render(state, seed=0)) != reference).sum() <= 0.02 * reference.sum(), name


@pytest.mark.parametrize("source", ["procedural", "image file"])
def test_the_two_engines_draw_the_same_scene(source, tmp_path):
    require("mitsuba")
    require("bpy")
    environment = CHECKER
    if source == "image file":  # an equirectangular PNG (sRGB): both engines decode it to linear radiance
        from confidently.io.images import save_image
        from confidently.render.engines.procedural import environment_map, srgb_encode

        linear = environment_map("file", "stripes:3")
        save_image(torch.from_numpy(srgb_encode(linear)).permute(2, 0, 1), tmp_path / "stripes.png")
        environment = EnvironmentSpec("file", path=tmp_path / "stripes.png")
    args = RenderArgs(resolution=32, samples=16, with_uv=True, with_depth=True)
    state = SceneState(view_point=(0.7, -1.0, 0.5), rotation=(0.2, 0.0, 0.6), focal_length=35.0, texture=quadrants(8),
                       light=0.8, light_color=(1.0, 0.9, 0.8))
    outs = []
    for name in ("mitsuba", "bpy"):
        engine = engine_class(name)()
        engine.load(ObjectSpec("mug", LABEL, builtin="mug"), environment, args)
        outs.append(engine.render(state, seed=0))
    a, b = outs
    union = (mask(a) | mask(b)).sum()
    assert (mask(a) & mask(b)).sum() / union > 0.93  # edges: Cycles' index pass comes from one sample
    both = mask(a) & mask(b)
    assert abs((a["rgb"][:, both] - b["rgb"][:, both]).mean()) < 0.02  # same light, tint, texture, view transform
    assert (a["uv"][:, both] - b["uv"][:, both]).abs().mean() < 0.02
    assert (a["depth"][:, both] - b["depth"][:, both]).abs().mean() < 0.005
    background = ~(mask(a) | mask(b))
    assert (a["rgb"][:, background] - b["rgb"][:, background]).abs().mean() < 0.03  # the same environment map
    assert (a["rgb"] - b["rgb"]).abs().mean() < 0.05  # shading differs only by noise and the samplers


def test_describe_names_the_renderer(engine):
    load(engine, "sphere")
    info = engine.describe()
    assert info["engine"] == engine.name and info["texture_convention"] == "row=floor(v*s)"
    assert info["samples"] == SMALL.samples and info["threads"] == 1 and info["view_transform"].startswith("Standard")
    assert set(engine.builtins) >= {"cube", "sphere", "cylinder", "rectangle", "mug"}
