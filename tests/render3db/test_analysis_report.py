"""`analyze --report`: 3DB's dashboard panels (failure modes, per object, aggregate trends) on a hand-made grid
whose answers are worked out by hand, and through the command line."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
from confidently.render3db.analysis import wilson
from confidently.render3db.analysis_report import aggregate, dashboard_panels, failure_modes, per_object


def grid() -> list[dict]:
    """2 objects × 2 environments × zoom {0.5, 1} × corruption {none, fog}, heading fixed: the mug is right only
    at zoom 1; the ball is wrong only under fog in the busy environment."""
    records = []
    for order, (obj, env, zoom, corruption) in enumerate(itertools.product(
            ("mug", "ball"), ("plain", "busy"), (0.5, 1.0), ("none", "fog"))):
        correct = zoom == 1.0 if obj == "mug" else not (env == "busy" and corruption == "fog")
        records.append({"tool": "render-3db", "id": f"r{order:02d}", "order": order, "object": obj, "environment": env,
                        "label": 1, "render_args": {"orientation.rotation_z": 0.0, "camera.zoom_factor": zoom,
                                                    "imagenet_c.corruption_name": corruption},
                        "is_correct": correct, "prediction": [1 if correct else 0]})
    return records


def test_failure_modes_rank_the_clearest_failures_first():
    records = grid()
    rows = failure_modes(records)
    controls = [r for r in rows if r["kind"] == "control"]
    # zoom 0.5: 3/8 right (the ball's), fog 4/8, none 6/8, zoom 1: 7/8; the fixed heading is no control value
    assert [(r["param"], r["value"], r["correct"], r["n"]) for r in controls] == [
        ("camera.zoom_factor", 0.5, 3, 8), ("imagenet_c.corruption_name", "fog", 4, 8),
        ("imagenet_c.corruption_name", "none", 6, 8), ("camera.zoom_factor", 1.0, 7, 8)]
    assert [r["rank"] for r in controls] == [0, 1, 2, 3] and controls[0]["ci"] == wilson(3, 8)
    wrong = {r["id"] for r in records if not r["is_correct"]}
    assert controls[0]["wrong"] == ["r00", "r01", "r04"] and set(controls[0]["wrong"]) <= wrong  # plan order, 3
    scenes = [r for r in rows if r["kind"] == "scene"]
    assert {(r["object"], r["environment"]) for r in scenes} == {("mug", "plain"), ("mug", "busy"), ("ball", "busy")}
    assert all(r["acc"] == 0.5 for r in scenes)  # the ball in the plain environment never fails: not listed
    configs = [(r["config"], r["correct"], r["n"]) for r in rows if r["kind"] == "configuration"]
    assert configs == [({"camera.zoom_factor": 0.5, "imagenet_c.corruption_name": "fog"}, 1, 4),
                       ({"camera.zoom_factor": 0.5, "imagenet_c.corruption_name": "none"}, 2, 4),
                       ({"camera.zoom_factor": 1.0, "imagenet_c.corruption_name": "fog"}, 3, 4)]
    top = failure_modes(records, top=1)
    assert [r["kind"] for r in top] == ["control", "scene", "configuration"] and top[0] == controls[0]
    # a value that fails half of 20 times outranks one that failed its only render (Wilson upper 0.70 < 0.79)
    uneven = [{"id": str(i), "object": "mug", "environment": "plain", "render_args": {"light.intensity": 1 if i else 9},
               "is_correct": i % 2 == 0 and i > 0} for i in range(21)]
    ranked = [(r["value"], r["correct"], r["n"]) for r in failure_modes(uneven) if r["kind"] == "control"]
    assert ranked == [(1, 10, 20), (9, 0, 1)]


def test_per_object_sensitivity_is_the_spread_over_a_groups_values():
    rows = per_object(grid())
    objects = {r["object"]: r for r in rows if r["kind"] == "object"}
    assert objects["mug"]["acc"] == 0.5 and objects["ball"]["acc"] == 0.75 and objects["ball"]["n"] == 8
    groups = {(r["object"], r["group"]): r for r in rows if r["kind"] == "group"}
    assert set(groups) == {(o, g) for o in ("mug", "ball") for g in ("environment", "camera", "imagenet_c")}
    assert groups[("mug", "camera")]["sensitivity"] == 1.0 and groups[("mug", "environment")]["sensitivity"] == 0
    mug_zoom = groups[("mug", "camera")]
    assert mug_zoom["best"] == {"value": 1.0, "acc": 1.0, "n": 4} and mug_zoom["worst"] == {"value": 0.5, "acc": 0.0,
                                                                                           "n": 4}
    assert groups[("ball", "environment")]["sensitivity"] == 0.5 and groups[("ball", "camera")]["sensitivity"] == 0
    assert groups[("ball", "imagenet_c")]["worst"]["value"] == "fog"
    assert groups[("ball", "imagenet_c")]["params"] == {"imagenet_c.corruption_name": 0.5}


def test_aggregate_trends_over_every_object_and_environment():
    rows = aggregate(grid())
    (total,) = [r for r in rows if r["kind"] == "overall"]
    assert (total["n"], total["correct"], total["objects"], total["environments"]) == (16, 10, 2, 2)
    trends = {r["param"]: r for r in rows if r["kind"] == "trend"}
    assert list(trends) == ["object", "environment", "camera.zoom_factor", "imagenet_c.corruption_name"]
    # zoom and correctness are both two-valued: Spearman's r is their phi coefficient, worked out by hand
    assert trends["camera.zoom_factor"]["spearman"] == pytest.approx((7 / 16 - 0.5 * 10 / 16) /
                                                                     (0.5 * math.sqrt(10 / 16 * 6 / 16)))
    assert trends["imagenet_c.corruption_name"]["spearman"] is None and trends["object"]["spearman"] is None
    assert trends["environment"]["spread"] == pytest.approx(6 / 8 - 4 / 8)
    values = [r for r in rows if r["kind"] == "value" and r["param"] == "camera.zoom_factor"]
    assert [(r["value"], r["correct"], r["n"]) for r in values] == [(0.5, 3, 8), (1.0, 7, 8)]
    assert all(r["group"] == "camera" for r in values)


def test_the_panels_never_depend_on_record_order():
    records = grid()
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert dashboard_panels(shuffled) == dashboard_panels(records)
    panels = [r["panel"] for r in dashboard_panels(records)]
    assert panels == sorted(panels, key=["failure_modes", "per_object", "aggregate"].index)


def test_analyze_report_through_the_cli(tmp_path, capsys):
    """The real command line (in this process): the overall row, then the panels and no default table."""
    from confidently.cli.app import run_app
    from confidently_tools.render_3db import app

    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grid()))
    with pytest.raises(SystemExit) as done:
        run_app(app, "render-3db", ["analyze", str(tmp_path / "results.jsonl"), "--report", "--plots",
                                    str(tmp_path / "charts")])
    assert done.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["analysis"] == "overall" and rows[1:] == dashboard_panels(grid())
    assert sorted(p.name for p in (tmp_path / "charts").glob("*.png")) == ["report_aggregate.png",
                                                                          "report_per_object.png"]
