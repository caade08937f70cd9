"""Every control is effective: changing one parameter changes the render; post-render controls leave the
scene alone; each control is a registered plugin with its declared dimensions."""

from __future__ import annotations

import pytest
import torch
from confidently.render3db import CONTROLS, RenderWorker, WorkerSettings, load_experiment
from confidently.render3db.jobs import Job
from confidently.unadversarial.texture import save_texture

# per control: a baseline value for every parameter, and for each parameter another value
BASELINES = {
    "camera": {"view_point_x": 0.0, "view_point_y": -1.0, "view_point_z": 0.3, "zoom_factor": 1.0, "aperture": None,
               "focal_length": 50.0},
    "orientation": {"rotation_x": 0.0, "rotation_y": 0.0, "rotation_z": 0.0},
    "position": {"offset_x": 0.0, "offset_y": 0.0, "offset_z": 0.0},
    "scale": {"factor": 1.0},
    "obj_loc_in_frame": {"x_shift": 0.0, "y_shift": 0.0},
    "light": {"intensity": 1.0, "hue": 0.0, "saturation": 0.8},
    "background": {"H": 0.0, "S": 0.8, "V": 0.8},
    "imagenet_c": {"corruption_name": "fog", "severity": 1},
    "texture": {"source": "original"},
}
OTHER = {
    "camera": {"view_point_x": 0.8, "view_point_y": -0.2, "view_point_z": 0.9, "zoom_factor": 1.6, "aperture": 2.0,
               "focal_length": 15.0},
    "orientation": {"rotation_x": 0.8, "rotation_y": 0.8, "rotation_z": 1.2},
    "position": {"offset_x": 0.3, "offset_y": 0.4, "offset_z": 0.3},
    "scale": {"factor": 0.5},
    "obj_loc_in_frame": {"x_shift": 0.5, "y_shift": -0.5},
    "light": {"intensity": 1.6, "hue": 0.6, "saturation": 0.2},
    "background": {"H": 0.5, "S": 0.2, "V": 0.3},
    "imagenet_c": {"corruption_name": "contrast", "severity": 4},
    "texture": {"source": "stripes.safetensors"},
}


# 3DB's controls only Cycles draws (the null engine refuses them): tests/render3db/test_threedb_controls.py
BLENDER_ONLY = {"pin_to_ground": {"z_ground"}, "pointlight": {"H", "S", "V", "intensity", "distance", "dir_x", "dir_y",
                                                               "dir_z"},
                "denoiser": set(), "occlusion": {"occlusion_ratio", "zoom", "scale", "direction", "occluder"},
                "material": {"replacement_material"}, "mug_liquid": {"ratio_milk", "ratio_coffee"}}


def test_every_builtin_control_is_covered_and_declares_its_dimensions():
    assert set(CONTROLS.names()) == set(BASELINES) | set(BLENDER_ONLY)
    for name in CONTROLS.names():
        cls = CONTROLS.get(name)
        dimensions = BLENDER_ONLY[name] if name in BLENDER_ONLY else set(BASELINES[name])
        assert cls.kind in ("pre", "post") and set(cls.params) == dimensions
        described = cls.describe()
        assert described["name"] == name and set(described["parameters"]) == set(cls.params)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("controls")
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[0, :, :, ::2] = 1.0
    stripes[0, 1] = 0.2
    save_texture(root / "stripes.safetensors", stripes, [1], {"tool": "test"})
    (root / "exp.yaml").write_text(
        "objects: [{id: mug, builtin: mug, label: 1, color: [0.8, 0.3, 0.2]}]\n"
        "environments: [{id: grey, solid: [0.5, 0.5, 0.5]}]\n"
        "render_args: {engine: null, resolution: 40, samples: 4, with_segmentation: true}\n"
        "controls:\n" + "".join(f"  - {{module: {name}}}\n" for name in BASELINES))
    experiment = load_experiment(root / "exp.yaml")
    return RenderWorker(WorkerSettings(experiment, evaluate=False, keep_images=True))


def job(args):
    return Job(order=0, id="j", pair=0, environment="grey", object="mug", label=1, index=0, point=(), discrete=(),
               args=args, seed=7)


def flat(values):
    return {f"{control}.{param}": v for control, params in values.items() for param, v in params.items()}


@pytest.mark.parametrize("key", sorted(flat(OTHER)))
def test_each_parameter_changes_the_render(worker, key):
    base = flat(BASELINES)
    before, _ = worker.render(job(base))
    after, _ = worker.render(job({**base, key: flat(OTHER)[key]}))
    delta = (after["rgb"].float() - before["rgb"].float()).abs().mean() / 255
    assert delta > 1e-3, f"{key} did not change the image"
    if CONTROLS.get(key.split(".")[0]).kind == "post":  # the scene (its mask) is untouched by image controls
        assert torch.equal(before["segmentation"], after["segmentation"])


def test_renders_are_deterministic_and_start_from_a_fresh_scene(worker):
    base = flat(BASELINES)
    first, _ = worker.render(job(base))
    worker.render(job({**base, **flat(OTHER)}))  # everything changed in between...
    again, _ = worker.render(job(base))
    assert torch.equal(first["rgb"], again["rgb"])  # ...and nothing leaks into the next render


@pytest.mark.parametrize("order, centred", [(("position", "camera"), True), (("camera", "position"), False)])
def test_the_camera_aims_at_the_object_the_controls_before_it_moved(tmp_path, order, centred):
    (tmp_path / "exp.yaml").write_text(
        "objects: [{id: mug, builtin: sphere, label: 1}]\n"
        "environments: [{id: grey, solid: [0.5, 0.5, 0.5]}]\n"
        "render_args: {engine: null, resolution: 48, samples: 4, with_segmentation: true}\n"
        "controls:\n" + "".join(f"  - {{module: {name}}}\n" for name in order))
    worker = RenderWorker(WorkerSettings(load_experiment(tmp_path / "exp.yaml"), evaluate=False, keep_images=True))
    args = flat({"position": {"offset_x": 0.8, "offset_y": 0.0, "offset_z": 0.6},
                 "camera": {**BASELINES["camera"], "zoom_factor": 0.6}})
    out, _ = worker.render(job(args))
    rows, cols = torch.nonzero(torch.as_tensor(out["segmentation"]).squeeze() >= 0, as_tuple=True)
    offcentre = max(abs(float(cols.float().mean()) + 0.5 - 24), abs(float(rows.float().mean()) + 0.5 - 24)) / 24
    assert len(rows) > 0 and (offcentre < 0.05) == centred, offcentre
