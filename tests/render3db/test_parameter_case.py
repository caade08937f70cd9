"""3DB's paper configs capitalise some control parameters (``offset_X``, ``rotation_Z``): render-3db reads them as
the control's own names, says so, and refuses a parameter given twice that way."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
from confidently.errors import UsageError
from confidently.render3db.config import parse_controls

from tests.tools.test_render_3db_cli import ENV

CONFIG = textwrap.dedent("""
    objects: [{id: ball, builtin: sphere, label: 1}]
    environments: [{id: grey, solid: [0.5, 0.5, 0.5]}]
    render_args: {engine: null, resolution: 32, samples: 1}
    policy: {module: threedb.policies.grid_search, samples_per_dim: 2}
    controls:
      - module: threedb.controls.blender.position
        offset_X: 0.25
        offset_y: 0
        offset_Z: (-0.5, 0.5)
      - module: threedb.controls.blender.orientation
        rotation_x: 0
        rotation_y: 0
        rotation_Z: [0.5, 1.5]
""")


def test_capitalised_parameters_plan_as_the_controls_own(tmp_path):
    (tmp_path / "exp.yaml").write_text(CONFIG)
    done = subprocess.run(["render-3db", "run", "exp.yaml", "--dry-run"], cwd=tmp_path, capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line)["render_args"] for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == 2 * 2  # offset_z × rotation_z
    assert {r["position.offset_x"] for r in rows} == {0.25}
    assert {r["position.offset_z"] for r in rows} == {-0.5, 0.5}
    assert {r["orientation.rotation_z"] for r in rows} == {0.5, 1.5}
    assert not any(k.endswith(("_X", "_Z")) for r in rows for k in r)
    said = " ".join(done.stderr.split())
    assert "offset_X as offset_x, offset_Z as offset_z" in said and "rotation_Z as rotation_z" in said
    assert "offset_y as" not in said  # the exact names pass without a word


def test_a_parameter_given_twice_by_case_is_refused(tmp_path):
    with pytest.raises(UsageError, match="offset_x.*twice"):
        parse_controls([{"module": "position", "offset_x": 0.1, "offset_X": 0.2}], tmp_path)
    with pytest.raises(UsageError, match="unknown parameter.*offset_W"):  # case folding finds no stranger names
        parse_controls([{"module": "position", "offset_W": 0.1}], tmp_path)
