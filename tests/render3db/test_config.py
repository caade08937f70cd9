"""Experiment files: 3DB range syntax, base configs, and refusals with the valid choices in the message."""

from __future__ import annotations

import math

import pytest
from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.render.engines import ENGINE_MODULES
from confidently.render3db import count_jobs, load_experiment, search_space


def settings(path):
    return {s.key: s for s in search_space(load_experiment(path).controls).settings}


def test_range_syntax_fixed_continuous_discrete(experiment_file):
    path = experiment_file(controls=[
        {"module": "orientation", "rotation_x": 0, "rotation_y": "(-1, 1)",
         "rotation_z": {"range": ["-pi", "pi"], "endpoint": False}},
        {"module": "camera", "view_point_x": [-0.5, 0.5], "view_point_y": -1, "view_point_z": {"values": [0, 0.5, 1]},
         "zoom_factor": [0.8, 1.0, 1.2], "aperture": None, "focal_length": {"range": [50, 50]}},
        {"module": "imagenet_c", "corruption_name": ["fog", "contrast"], "severity": {"values": [2]}},
    ])
    s = settings(path)
    assert s["orientation.rotation_x"].mode == "fixed" and s["orientation.rotation_x"].value == 0
    assert (s["orientation.rotation_y"].mode, s["orientation.rotation_y"].low, s["orientation.rotation_y"].high) == \
        ("continuous", -1, 1)
    z = s["orientation.rotation_z"]
    assert z.low == pytest.approx(-math.pi) and z.high == pytest.approx(math.pi) and z.endpoint is False
    assert s["camera.view_point_x"].mode == "continuous"  # a 2-list is a range (3DB)
    assert s["camera.view_point_z"].values == (0.0, 0.5, 1.0) and s["camera.zoom_factor"].mode == "discrete"
    assert s["camera.aperture"].value is None and s["camera.focal_length"].mode == "fixed"
    assert s["imagenet_c.corruption_name"].values == ("fog", "contrast") and s["imagenet_c.severity"].value == 2
    # parameters the file does not mention take the control's default range (3DB's rule)
    assert s["camera.view_point_x"].mode == "continuous"
    defaults = settings(experiment_file("d.yaml", controls=[{"module": "scale"}]))
    assert (defaults["scale.factor"].low, defaults["scale.factor"].high) == (0.25, 1.0)


def test_base_config_inheritance(experiment_file, tmp_path):
    experiment_file("base.yaml", policy={"module": "grid", "samples_per_dim": 4},
                    controls=[{"module": "scale", "factor": [0.5, 1]}])
    child = tmp_path / "child.yaml"
    child.write_text("base_config: base.yaml\npolicy: {module: grid, samples_per_dim: 2}\n")
    experiment = load_experiment(child)
    assert experiment.policy["samples_per_dim"] == 2  # the child's key wins
    assert [c.name for c in experiment.controls] == ["scale"] and experiment.renderer == "null"  # the rest inherited
    assert count_jobs(experiment) == 2 * 2
    (tmp_path / "loop.yaml").write_text("base_config: loop.yaml\n")
    with pytest.raises(UsageError, match="cycle"):
        load_experiment(tmp_path / "loop.yaml")


@pytest.mark.parametrize("controls, message", [
    ([{"module": "rotation"}], "unknown control 'rotation'; choose background, camera,"),
    ([{"module": "camera", "zoom": 1}], "unknown parameter.*zoom; valid parameters: view_point_x, view_point_y"),
    ([{"module": "camera", "zoom_factor": [-1, 2]}], r"camera.zoom_factor: -1.0 is outside the domain \(0, inf\)"),
    ([{"module": "obj_loc_in_frame", "x_shift": [0, 1.5]}], r"outside the domain \[-1, 1\]"),
    ([{"module": "imagenet_c", "corruption_name": "snowstorm"}], "not one of brightness, contrast"),
    ([{"module": "scale", "factor": [1, 0.5]}], "low > high"),
    ([{"module": "scale", "factor": {"range": [0.5, 1], "step": 2}}], "valid keys: range, endpoint"),
    ([{"module": "scale"}, {"module": "scale"}], "appears twice"),
    ([{"module": "texture", "source": "missing.safetensors"}], "does not exist"),
])
def test_bad_controls_are_refused_with_the_valid_choices(experiment_file, controls, message):
    path = experiment_file(controls=controls)
    with pytest.raises((UsageError, InvalidInput), match=message):
        load_experiment(path)


def test_bad_sections_objects_and_policies(experiment_file):
    with pytest.raises(UsageError, match="unknown key.*objetcs; valid keys: base_config, objects"):
        load_experiment(experiment_file(objetcs=[]))
    with pytest.raises(UsageError, match="unknown key.*sample; valid keys: engine, resolution"):
        load_experiment(experiment_file(render_args={"engine": "null", "sample": 4}))
    with pytest.raises(UsageError, match="policy grid: unknown key.*samples; valid keys: samples_per_dim"):
        load_experiment(experiment_file(policy={"module": "grid", "samples": 5}))  # the paper configs' base key
    with pytest.raises(UsageError, match="unknown policy 'bayes'; choose grid, random"):
        load_experiment(experiment_file(policy={"module": "bayes"}))
    with pytest.raises(InvalidInput, match="mesh file .*teapot.obj does not exist") as error:
        load_experiment(experiment_file(objects=[{"id": "t", "path": "teapot.obj", "label": 0}]))
    assert error.value.exit_code == 3
    with pytest.raises(UsageError, match="no built-in 'teapot'; choose sphere, cube"):
        load_experiment(experiment_file(objects=[{"id": "t", "builtin": "teapot", "label": 0}]))
    with pytest.raises(UsageError, match="label 'mug' is a name; give inference.label_map"):
        load_experiment(experiment_file(objects=[{"id": "t", "builtin": "mug", "label": "mug"}]))


class LimitedEngine:
    """An engine that honours only the camera: a control writing anything else must be refused up front."""

    name = "limited"
    fields = frozenset({"view_point", "zoom", "focal_length"})


def test_controls_an_engine_cannot_honour_are_refused_at_validation(experiment_file, monkeypatch):
    monkeypatch.setitem(ENGINE_MODULES, "limited", (__name__, "LimitedEngine"))
    render = {"engine": "limited", "resolution": 32}
    ok = experiment_file("ok.yaml", render_args=render, controls=[
        {"module": "camera", "aperture": None}, {"module": "light", "intensity": 1},  # neutral values need nothing
        {"module": "background"}, {"module": "imagenet_c"}])  # post-render controls need no scene field
    assert load_experiment(ok).renderer == "limited"
    for controls, field in (([{"module": "camera", "aperture": 8}], "camera.aperture.*field aperture"),
                            ([{"module": "orientation"}], "orientation.rotation_x.*field rotation"),
                            ([{"module": "light", "intensity": 1, "saturation": [0, 1]}],
                             "light.saturation .*field light_color")):
        with pytest.raises(UsageError, match=f"engine 'limited' cannot honour {field}"):
            load_experiment(experiment_file("bad.yaml", render_args=render, controls=controls))
    monkeypatch.setitem(ENGINE_MODULES, "gone", ("confidently.render.engines.not_there", "Nope"))
    with pytest.raises(MissingBackend, match="render engine 'gone' is not available"):
        load_experiment(experiment_file("gone.yaml", render_args={"engine": "gone"}))


def test_fingerprint_depends_on_what_is_rendered_not_on_threads(experiment_file):
    a = load_experiment(experiment_file("a.yaml", controls=[{"module": "scale"}]))
    b = load_experiment(experiment_file("b.yaml", controls=[{"module": "scale"}],
                                        render_args={"engine": "null", "resolution": 32, "samples": 4, "threads": 2}))
    c = load_experiment(experiment_file("c.yaml", controls=[{"module": "scale", "factor": [0.3, 1]}]))
    assert a.sha256(0) == b.sha256(0) != c.sha256(0) and a.sha256(0) != a.sha256(1)
