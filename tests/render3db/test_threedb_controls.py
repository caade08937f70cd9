"""3DB's controls that render-3db lacked, on Cycles: each changes the render as its parameter says, measured on
the image (tiny renders); engines that cannot draw them refuse them when the config is read."""

from __future__ import annotations

import pytest
import torch
import yaml
from confidently.errors import UsageError
from confidently.render3db import RenderWorker, WorkerSettings, load_experiment
from confidently.render3db.jobs import Job

pytest.importorskip("bpy")
pytestmark = pytest.mark.render

CAMERA = {"module": "camera", "view_point_x": 0.0, "view_point_y": -1.0, "view_point_z": 0.0, "zoom_factor": 0.6,
          "focal_length": 50.0}


def worker(root, controls, obj=None, environment=None, engine="bpy", samples=4, resolution=32):
    config = {"objects": [obj or {"id": "ball", "builtin": "sphere", "label": 1, "color": [0.8, 0.8, 0.8]}],
              "environments": [environment or {"id": "grey", "solid": [0.4, 0.4, 0.4]}],
              "render_args": {"engine": engine, "resolution": resolution, "samples": samples,
                              "with_segmentation": True},
              "controls": controls}
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return RenderWorker(WorkerSettings(load_experiment(path), evaluate=False, keep_images=True))


def render(w, seed=7, **args):
    """rgb (float, 0-1) and the object's mask for one render with ``args`` ({"control.param": value})."""
    obj = w.settings.experiment.objects[0]
    out, _ = w.render(Job(order=0, id="j", pair=0, environment=w.settings.experiment.environments[0].id,
                          object=obj.id, label=1, index=0, point=(), discrete=(), args=args, seed=seed))
    return out["rgb"].float() / 255, torch.as_tensor(out["segmentation"]).squeeze() >= 0


def camera_args():
    return {f"camera.{k}": v for k, v in CAMERA.items() if k != "module"} | {"camera.aperture": None}


def test_pin_to_ground_puts_the_lowest_point_at_the_height(tmp_path):
    w = worker(tmp_path, [CAMERA, {"module": "pin_to_ground"}])
    _, at_zero = render(w, **camera_args(), **{"pin_to_ground.z_ground": 0.0})
    _, lifted = render(w, **camera_args(), **{"pin_to_ground.z_ground": 0.5})
    bottom = lambda mask: int(torch.nonzero(mask.any(1)).max())  # noqa: E731  (lowest object row)
    assert abs(bottom(at_zero) + 0.5 - 16) <= 1.5  # the camera is level with the ground: the horizon row
    assert bottom(lifted) < bottom(at_zero) - 2


def test_the_point_light_lights_the_side_it_is_on(tmp_path):
    w = worker(tmp_path, [CAMERA, {"module": "pointlight"}], environment={"id": "dark", "solid": [0.02] * 3})
    light = {"pointlight.H": 0.0, "pointlight.S": 0.0, "pointlight.V": 1.0, "pointlight.intensity": 3000.0,
             "pointlight.distance": 5.0, "pointlight.dir_y": -0.3, "pointlight.dir_z": 0.0}
    for side, sign in (("right", 1.0), ("left", -1.0)):
        rgb, mask = render(w, **camera_args(), **light, **{"pointlight.dir_x": sign})
        lum = rgb.mean(0)
        right = lum[:, 16:][mask[:, 16:]].mean()
        left = lum[:, :16][mask[:, :16]].mean()
        assert (right > 2 * left) if side == "right" else (left > 2 * right), (side, float(left), float(right))


def test_the_denoiser_brings_a_low_sample_render_closer_to_a_converged_one(tmp_path):
    environment = {"id": "sky", "procedural": "checker"}
    reference, _ = render(worker(tmp_path, [CAMERA], environment=environment, samples=256), **camera_args())
    noisy, _ = render(worker(tmp_path, [CAMERA], environment=environment, samples=1), **camera_args())
    clean, _ = render(worker(tmp_path, [CAMERA, {"module": "denoiser"}], environment=environment, samples=1),
                      **camera_args())
    error = lambda image: float((image - reference).pow(2).mean())  # noqa: E731
    assert error(clean) < 0.7 * error(noisy), (error(clean), error(noisy))


OBJ_CUBE = "".join(f"v {x} {y} {z}\n" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)) + \
    "f 1 2 4 3\nf 5 7 8 6\nf 1 5 6 2\nf 3 4 8 7\nf 1 3 7 5\nf 2 6 8 4\n"


@pytest.mark.parametrize("files", [False, True], ids=["builtin", "ood_objects"])
def test_occlusion_covers_more_of_the_object_as_the_ratio_grows(tmp_path, files):
    if files:
        (tmp_path / "ood_objects").mkdir()
        (tmp_path / "ood_objects" / "box.obj").write_text(OBJ_CUBE)
    _, alone = render(worker(tmp_path, [CAMERA]), **camera_args())
    w = worker(tmp_path, [CAMERA, {"module": "occlusion"}])
    occluded = []
    for ratio in (0.1, 0.4, 0.8):
        args = {"occlusion.occlusion_ratio": ratio, "occlusion.zoom": 0.3, "occlusion.scale": 1.0,
                "occlusion.direction": 1, "occlusion.occluder": 0}
        _, visible = render(w, **camera_args(), **args)
        occluded.append(1 - float(visible.sum()) / float(alone.sum()))
    assert occluded[0] < occluded[1] < occluded[2] and occluded[0] > 0.02 and occluded[2] > 0.4, occluded


def _save_blend(path, blocks):
    import bpy

    bpy.data.libraries.write(str(path), set(blocks))


def _material(name, colour):
    import bpy

    material = bpy.data.materials.new(name)
    if material.node_tree is None:
        material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*colour, 1.0)
    return material


def test_material_swaps_every_slot_for_the_file_material(tmp_path):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    (tmp_path / "blender_control_material").mkdir()
    _save_blend(tmp_path / "blender_control_material" / "red.blend", [_material("red", (0.8, 0.02, 0.02))])
    w = worker(tmp_path, [CAMERA, {"module": "material"}])
    means = {}
    for value in ("keep_original", "/blender_control_material/red.blend"):
        rgb, mask = render(w, **camera_args(), **{"material.replacement_material": value})
        means[value] = rgb[:, mask].mean(1)
    red, grey = means["/blender_control_material/red.blend"], means["keep_original"]
    assert red[0] > 3 * red[1] and abs(float(grey[0] - grey[1])) < 0.05


def test_liquid_colour_follows_the_milk_and_coffee_ratios(tmp_path):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    mesh = bpy.data.meshes.new("cup")
    mesh.from_pydata([(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)], [], [(0, 1, 2, 3)])
    mesh.materials.append(_material("liquid", (0.5, 0.5, 0.5)))
    cup = bpy.data.objects.new("cup", mesh)
    _save_blend(tmp_path / "cup.blend", [cup])
    camera = {**CAMERA, "view_point_y": -0.2, "view_point_z": 1.0}
    w = worker(tmp_path, [camera, {"module": "mug_liquid"}], obj={"id": "cup", "path": "cup.blend", "label": 1})
    args = {f"camera.{k}": v for k, v in camera.items() if k != "module"} | {"camera.aperture": None}
    colours = {}
    for milk, coffee in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0), (0.5, 0.5)):
        rgb, mask = render(w, **args, **{"mug_liquid.ratio_milk": milk, "mug_liquid.ratio_coffee": coffee})
        colours[milk, coffee] = rgb[:, mask].mean(1)
    brightness = {k: float(v.mean()) for k, v in colours.items()}
    assert brightness[1.0, 0.0] > brightness[0.5, 0.5] > brightness[0.0, 1.0] + 0.1, brightness
    assert float((colours[0.0, 0.0] - colours[1.0, 0.0]).abs().max()) > 0.05  # water is neither


@pytest.mark.parametrize("control", [{"module": "pin_to_ground"}, {"module": "pointlight"}, {"module": "denoiser"},
                                     {"module": "occlusion"}, {"module": "mug_liquid"}])
def test_engines_that_cannot_draw_a_control_refuse_it_at_load(tmp_path, control):
    with pytest.raises(UsageError, match="cannot honour"):
        worker(tmp_path, [control], engine="null")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_image_file_textures_the_object_in_its_colour(tmp_path, suffix):
    from PIL import Image

    Image.new("RGB", (6, 4), (20, 200, 30)).save(tmp_path / f"green{suffix}")
    w = worker(tmp_path, [CAMERA, {"module": "texture", "source": {"values": ["original", f"green{suffix}"]}}])
    green, mask = render(w, **camera_args(), **{"texture.source": f"green{suffix}"})
    grey, _ = render(w, **camera_args(), **{"texture.source": "original"})
    g, o = green[:, mask].mean(1), grey[:, mask].mean(1)
    assert g[1] > 2 * g[0] and g[1] > 2 * g[2] and abs(float(o[1] - o[0])) < 0.05, (g, o)
