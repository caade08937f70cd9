"""Analyses on a hand-made record set: exact accuracies, Wilson intervals, heatmaps, box plots, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
from confidently.errors import UsageError
from confidently.render3db import accuracy_by, boxplot, confusion, heatmap, overall, stability, wilson


def record(obj, env, zoom, heading, correct, prediction):
    return {"id": f"{obj}-{env}-{zoom}-{heading}", "object": obj, "environment": env, "label": 0,
            "render_args": {"camera.zoom_factor": zoom, "orientation.rotation_z": heading},
            "is_correct": correct, "prediction": [prediction]}


@pytest.fixture
def records():
    out = []
    for obj in ("mug", "ball"):
        for env in ("white", "busy"):
            for zoom in (0.5, 1.0, 2.0):
                for heading in (0.0, 1.0, 2.0, 3.0):
                    # the ball is always right; the mug only at zoom 1, and never on the busy backdrop at heading 3
                    correct = obj == "ball" or (zoom == 1.0 and not (env == "busy" and heading == 3.0))
                    prediction = 0 if correct else (1 if heading < 2 else 2)
                    out.append(record(obj, env, zoom, heading, correct, prediction))
    out.append({"id": "bad", "error": "line 3: oops"})  # error lines are skipped
    return out


def test_wilson_matches_the_textbook_values():
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0 and wilson(0, 0) == [0.0, 1.0]


def test_accuracy_by_exact_values_bins_and_joint(records):
    assert overall(records)["n"] == 48 and overall(records)["acc"] == pytest.approx((24 + 7) / 48)
    by_zoom = accuracy_by(records, "zoom_factor")  # a suffix resolves to camera.zoom_factor
    assert [(r["value"], r["n"], r["correct"]) for r in by_zoom] == [(0.5, 16, 8), (1.0, 16, 15), (2.0, 16, 8)]
    assert by_zoom[0]["ci"] == pytest.approx(wilson(8, 16)) and by_zoom[0]["param"] == "camera.zoom_factor"
    binned = accuracy_by(records, "orientation.rotation_z", bins=2)
    assert [r["bin"] for r in binned] == [[0.0, 1.5], [1.5, 3.0]] and [r["n"] for r in binned] == [24, 24]
    assert [r["correct"] for r in binned] == [12 + 4, 12 + 3]
    joint = {tuple(r["value"]): r["acc"] for r in accuracy_by(records, "object,environment")}
    assert joint[("ball", "busy")] == 1.0 and joint[("mug", "white")] == pytest.approx(4 / 12)
    assert joint[("mug", "busy")] == pytest.approx(3 / 12)
    with pytest.raises(UsageError, match="unknown parameter 'tilt'; choose object, environment, label, camera"):
        accuracy_by(records, "tilt")


def test_heatmap_slices_and_boxplot(records):
    grid = heatmap(records, "camera.zoom_factor,orientation.rotation_z", fix={"object": "mug"})
    assert grid["x"] == [0.5, 1.0, 2.0] and grid["y"] == [0.0, 1.0, 2.0, 3.0]
    expected = np.zeros((3, 4))
    expected[1] = [1, 1, 1, 0.5]
    assert np.array_equal(grid["acc"], expected) and np.all(grid["n"] == 2)
    sliced = heatmap(records, "zoom_factor,rotation_z", fix={"object": "mug", "environment": "busy",
                                                             "zoom_factor": "1"})
    assert sliced["acc"].shape == (1, 4) and list(sliced["acc"][0]) == [1, 1, 1, 0]
    with pytest.raises(UsageError, match="no record has that value"):
        heatmap(records, "zoom_factor,rotation_z", fix={"zoom_factor": "3"})
    rows = {r["value"]: r for r in boxplot(records, "object,environment")}
    assert rows["ball"]["median"] == 1.0 and rows["mug"]["median"] == pytest.approx((3 / 12 + 4 / 12) / 2)
    assert rows["mug"]["q1"] == pytest.approx(3 / 12 + 0.25 * (1 / 12)) and rows["mug"]["groups"] == 2


def test_stability_and_confusion(records):
    # per (object, environment, zoom): is the top-1 prediction constant across headings?
    result = stability(records, "rotation_z")
    # ball: 6 stable settings; mug at zoom 1: white stable, busy not; mug at zooms 0.5/2: 1 then 2 → unstable
    assert result["settings"] == 12 and result["stable"] == 7 and result["fraction"] == pytest.approx(7 / 12)
    rows = {r["value"]: r for r in confusion(records, "object", names=["zero", "one", "two"])}
    assert rows["ball"]["predictions"] == [{"class": 0, "name": "zero", "n": 24, "frac": 1.0}]
    assert math.isclose(sum(p["frac"] for p in rows["mug"]["predictions"]), 1.0)
    with pytest.raises(UsageError, match="no judged records"):
        overall([{"id": "a", "tool": "render-3db"}])
