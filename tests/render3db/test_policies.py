"""Policies: the grid is exactly the cartesian product; random is reproducible and covers the ranges."""

from __future__ import annotations

import itertools
import math

import pytest
from confidently.errors import UsageError
from confidently.render3db import count_jobs, iter_jobs, load_experiment

CONTROLS = [{"module": "orientation", "rotation_x": 0, "rotation_y": [-1, 1],
             "rotation_z": {"range": [-math.pi, math.pi], "endpoint": False}},
            {"module": "camera", "view_point_x": 0, "view_point_y": -1, "view_point_z": 0.3, "zoom_factor": [0.5, 1.5],
             "focal_length": 50},
            {"module": "imagenet_c", "corruption_name": ["fog", "contrast", "brightness"], "severity": [1, 4]}]


def test_grid_is_exactly_the_cartesian_product(experiment_file):
    n = 3
    experiment = load_experiment(experiment_file(policy={"module": "grid", "samples_per_dim": n}, controls=CONTROLS))
    jobs = list(iter_jobs(experiment, 0))
    per_pair = n ** 3 * 3 * 2
    assert len(jobs) == count_jobs(experiment) == per_pair * 2  # two objects, one environment
    for pair in (0, 1):
        points = {(j.point, j.discrete) for j in jobs if j.pair == pair}
        closed, opened = [i / (n - 1) for i in range(n)], [i / n for i in range(n)]
        # the coordinates follow config order: rotation_y (closed), rotation_z (endpoint false), zoom (closed)
        expected = {(u, d) for u in itertools.product(closed, opened, closed)
                    for d in itertools.product(range(3), range(2))}
        assert points == expected and len(points) == per_pair
    values = {j.args["orientation.rotation_y"] for j in jobs}
    assert values == {-1.0, 0.0, 1.0}  # both endpoints
    headings = sorted({j.args["orientation.rotation_z"] for j in jobs})
    assert headings == pytest.approx([-math.pi, -math.pi / 3, math.pi / 3]) and max(headings) < math.pi
    assert {j.args["imagenet_c.corruption_name"] for j in jobs} == {"fog", "contrast", "brightness"}
    assert {j.args["orientation.rotation_x"] for j in jobs} == {0.0}  # fixed, still logged
    assert len({j.id for j in jobs}) == len(jobs) and [j.order for j in jobs] == list(range(len(jobs)))


def test_random_is_reproducible_in_range_and_seeded_per_pair(experiment_file):
    path = experiment_file(policy={"module": "random", "samples": 12, "seed": 5}, controls=CONTROLS)
    first, again = list(iter_jobs(load_experiment(path), 0)), list(iter_jobs(load_experiment(path), 0))
    assert [j.args for j in first] == [j.args for j in again] and [j.id for j in first] == [j.id for j in again]
    assert len(first) == 24
    for key, (low, high) in {"orientation.rotation_y": (-1, 1), "orientation.rotation_z": (-math.pi, math.pi),
                             "camera.zoom_factor": (0.5, 1.5)}.items():
        values = [j.args[key] for j in first]
        assert all(low <= v <= high for v in values) and len(set(values)) > 1
    assert len({j.args["imagenet_c.corruption_name"] for j in first}) > 1
    assert {j.args["camera.focal_length"] for j in first} == {50.0}
    pair0 = [j.point for j in first if j.pair == 0]
    pair1 = [j.point for j in first if j.pair == 1]
    assert pair0 != pair1  # each pair has its own seed
    other = experiment_file("other.yaml", policy={"module": "random", "samples": 12, "seed": 6}, controls=CONTROLS)
    assert [j.point for j in iter_jobs(load_experiment(other), 0)][:12] != pair0


def test_custom_policy_and_bad_policies(experiment_file):
    path = experiment_file(policy={"module": "py:tests.render3db.custom_policy:Corners", "repeat": 2},
                           controls=CONTROLS)
    experiment = load_experiment(path)
    jobs = list(iter_jobs(experiment, 0))
    assert len(jobs) == count_jobs(experiment) == 2 * 2 * 8
    assert {j.args["camera.zoom_factor"] for j in jobs} == {0.5, 1.5}
    with pytest.raises(UsageError, match="cannot import"):
        load_experiment(experiment_file("x.yaml", policy={"module": "py:tests.render3db.nothing:Here"}))
    with pytest.raises(UsageError, match="samples_per_dim must be an integer >= 1"):
        load_experiment(experiment_file("y.yaml", policy={"module": "grid", "samples_per_dim": 0}))
