"""The AirSim adapter through the real client (airsim or cosysairsim) against the loopback fake simulator.

The fake is a test double (numpy renderer, kinematic drone); these tests check the client path, the
geometry and the controller — not anything about AirSim's own rendering.
"""

import importlib.util
import math
import socket
import time

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput, MissingBackend, UsageError
from confidently.unadversarial import airsim
from confidently.unadversarial.airsim import (
    PID,
    GridSpec,
    LandingConfig,
    OracleRegressor,
    Simulator,
    SimulatorUnreachable,
    camera_grid,
    grid_eval,
    land_episode,
    landing_views,
    load_regressor,
    look_at_quaternion,
    mark_regressor,
    parse_weather,
    rotation_matrix,
    summarize_frames,
)
from PIL import Image

HAS_CLIENT = any(importlib.util.find_spec(name) for name in airsim.CLIENT_MODULES)
needs_client = pytest.mark.skipif(not HAS_CLIENT, reason="no AirSim client (airsim or cosysairsim) installed")


@pytest.fixture
def fake():
    pytest.importorskip("msgpackrpc")
    from confidently.unadversarial.airsim_fake import FakeSimulator, serve_fake

    server = serve_fake(sim=FakeSimulator(width=32, height=32), background=True)
    yield server
    server.stop()


@pytest.fixture
def sim(fake):
    if not HAS_CLIENT:
        pytest.skip("no AirSim client (airsim or cosysairsim) installed")
    with Simulator.connect("127.0.0.1", fake.port, connect_timeout=5, timeout=30) as connected:
        yield connected


@pytest.fixture
def red_png(tmp_path):
    path = tmp_path / "red.png"
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1))).save(path)
    return str(path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_look_at_points_the_body_axis_at_the_target():
    for position, target in [((-3, 1, -4), (0, 0, 0)), ((2, 2, -1), (5, -1, 0)), ((0, 0, -3), (0, 0, 0))]:
        forward = rotation_matrix(look_at_quaternion(position, target))[:, 0]
        direction = np.subtract(target, position) / np.linalg.norm(np.subtract(target, position))
        assert np.allclose(forward, direction, atol=1e-9)


@needs_client
def test_euler_matches_the_client_to_quaternion():
    module = airsim.client_module()
    for pitch, roll, yaw in [(0.3, -0.2, 1.1), (-math.pi / 2, 0, 0), (0.1, 0.5, -2.0)]:
        if hasattr(module, "to_quaternion"):  # airsim
            q = module.to_quaternion(pitch, roll, yaw)
        else:  # cosysairsim renamed it
            q = module.euler_to_quaternion(roll, pitch, yaw)
        assert np.allclose(airsim.euler_quaternion(pitch, roll, yaw), (q.w_val, q.x_val, q.y_val, q.z_val))


def test_parse_weather_and_bad_specs():
    assert parse_weather(None) == [{}]
    assert parse_weather(["fog:0,0.5 dust:0.25", "Snow:1"]) == [{"fog": 0.0}, {"fog": 0.5}, {"dust": 0.25},
                                                                {"snow": 1.0}]
    for bad in ["smog:0.5", "fog", "fog:2", "fog:a"]:
        with pytest.raises(UsageError, match="--weather"):
            parse_weather([bad])


def test_camera_grid_is_n_cubed_above_the_object():
    points = camera_grid((1.0, 2.0, 0.0), GridSpec(grid=3, radius=2.0, heights=(1.0, 3.0)))
    assert len(points) == 27 and len({tuple(p) for p in points}) == 27
    assert all(p[2] < 0 and abs(p[0] - 1) <= 2 and abs(p[1] - 2) <= 2 for p in points)


def test_no_client_module_is_a_missing_backend(monkeypatch):
    monkeypatch.setattr(airsim, "CLIENT_MODULES", ("no_such_airsim_client_module",))
    with pytest.raises(MissingBackend, match="not installed") as caught:
        Simulator.connect("127.0.0.1", closed_port(), connect_timeout=0.2)
    assert caught.value.exit_code == 3


@needs_client
def test_unreachable_and_silent_simulators_fail_fast_with_the_address():
    port = closed_port()
    started = time.perf_counter()
    with pytest.raises(SimulatorUnreachable, match=f"127.0.0.1:{port}") as caught:
        Simulator.connect("127.0.0.1", port, connect_timeout=0.5)
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)
    assert time.perf_counter() - started < 2
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.perf_counter()
        with pytest.raises(SimulatorUnreachable, match="does not answer"):
            Simulator.connect("127.0.0.1", silent.getsockname()[1], connect_timeout=1)
        assert time.perf_counter() - started < 6


def test_confirm_connection_and_the_fake_says_it_is_fake(sim, fake):
    assert "Connected" in sim.confirm()
    assert sim.kind == "fake" and sim.fake_info["name"] == "confidently-fake-airsim"
    assert {"ping", "getServerVersion", "getMinRequiredClientVersion"} <= set(fake.sim.calls)


def test_frames_are_rgb_and_look_at_centres_the_object(sim, fake, red_png):
    sim.set_texture("Target", red_png)
    assert fake.sim.texture_paths["Target"] == red_png
    sim.set_camera("0")
    for cam in [(-2.0, 0.5, -2.0), (1.5, -1.5, -3.0), (0.3, 0.2, -1.5)]:
        sim.look_at(cam, (0.0, 0.0, 0.0))
        frame = sim.image()
        assert frame.shape == (3, 32, 32) and frame.dtype == torch.float32
        centre = frame[:, 15:17, 15:17].mean(dim=(1, 2))
        assert centre[0] > 0.9 and centre[1] < 0.1 and centre[2] < 0.1, centre  # red stays red: BGR → RGB
        assert frame[:, 0, 0].tolist() != centre.tolist()
    with pytest.raises(InvalidInput, match="no object named"):
        sim.object_position("NoSuchObject")
    with pytest.raises(InvalidInput, match="texture"):
        sim.set_texture("Target", red_png + ".missing")


def test_weather_parameters_reach_the_server_and_change_frames(sim, fake):
    sim.look_at((-3.0, 0.0, -3.0), (0.0, 0.0, 0.0))
    clear = sim.image()
    sim.set_weather({"fog": 0.25})
    assert fake.sim.weather_enabled and fake.sim.weather == {"fog": 0.25}
    foggy = sim.image()
    assert (foggy - clear).abs().mean() > 0.02
    sim.set_weather({"dust": 0.5})
    assert fake.sim.weather == {"fog": 0.0, "dust": 0.5}
    sim.set_weather({})
    assert not fake.sim.weather_enabled and fake.sim.weather == {"fog": 0.0, "dust": 0.0}
    assert torch.equal(sim.image(), clear)


def test_grid_eval_2x2x2_gives_8_frames_per_arm_and_weather(sim, fake, red_png):
    from confidently.models import create_model

    torch.manual_seed(0)
    model = create_model("tiny_resnet", 10)
    start = fake.sim.objects["Target"].position.copy()
    records = list(grid_eval(sim, model, "Target", 3, arms={"original": None, "unadv": red_png},
                             weather=[{}, {"fog": 0.5}], spec=GridSpec(locations=1, grid=2), topk=5, batch_size=3))
    assert len(records) == 2 * 2 * 8
    for arm in ("original", "unadv"):
        for setting in ({}, {"fog": 0.5}):
            rows = [r for r in records if r["arm"] == arm and r["weather"] == setting]
            assert len(rows) == 8 and sorted(r["grid_index"] for r in rows) == list(range(8))
            assert len({tuple(r["cam_xyz"]) for r in rows}) == 8
    assert all(r["cmd"] == "airsim-eval" and r["simulator"] == "fake" and r["location"] == 0 for r in records)
    assert all(isinstance(r["top1"], bool) and isinstance(r["top5_correct"], bool) for r in records)
    assert all(r["top5_correct"] or not r["top1"] for r in records)
    assert fake.sim.texture_paths["Target"] == red_png
    assert np.allclose(fake.sim.objects["Target"].position, start)  # put back
    assert not fake.sim.weather_enabled
    summary = summarize_frames(records)
    assert [(s["arm"], s["n"]) for s in summary] == [("original", 8)] * 2 + [("unadv", 8)] * 2
    with pytest.raises(UsageError, match="class-id"):
        next(grid_eval(sim, model, "Target", 10, arms={"original": None}))


def test_pid_terms():
    pid = PID(kp=2.0, kd=0.5, ki=1.0)
    assert np.allclose(pid.step([1.0, -2.0], 0.1), [2.0 + 0.1, -4.0 - 0.2])  # no derivative on the first step
    assert np.allclose(pid.step([0.5, -1.0], 0.1), [1.0 - 2.5 + 0.15, -2.0 + 5.0 - 0.3])


def test_pid_landing_on_the_fake_drone_converges(sim, fake):
    trace = []
    result = land_episode(sim, OracleRegressor(sim, "LandingPad"), "LandingPad", LandingConfig(),
                          offset=(1.5, -1.2), trace=trace)
    assert result["landed"] and result["reached_land_alt"] and result["final_err_m"] < 0.1
    assert result["steps"] == len(trace) and math.isclose(result["time_s"], result["steps"] * 0.1)
    assert np.hypot(*trace[0]["true"]) > 1.5 and np.hypot(*trace[-1]["true"]) < 0.1
    late = [np.hypot(*step["true"]) for step in trace if step["t"] >= 5.0]
    assert late and max(late) < 0.1  # converged and stays there
    assert {"enableApiControl", "armDisarm", "takeoff", "moveByVelocity", "land"} <= set(fake.sim.calls)
    assert fake.sim.position[2] == 0.0


def test_regressor_model_file_drives_the_controller(sim, tmp_path):
    from confidently.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model("small_cnn", 2, img_size=32)
    with torch.no_grad():
        model.net.fc.weight.zero_()
        model.net.fc.bias.copy_(torch.tensor([0.3, -0.2]))
    save_model(model, tmp_path / "plain.safetensors")
    with pytest.raises(InvalidInput, match="not a pad regressor"):
        load_regressor(tmp_path / "plain.safetensors")
    save_model(mark_regressor(model), tmp_path / "pad.safetensors")
    regressor = load_regressor(tmp_path / "pad.safetensors")
    assert np.allclose(regressor(torch.rand(3, 48, 48)), (0.3, -0.2), atol=1e-6)
    trace = []
    land_episode(sim, regressor, "LandingPad", LandingConfig(max_time=0.2), trace=trace)
    assert len(trace) == 2 and np.allclose(trace[0]["v"], [5 * 0.3, 5 * -0.2])  # Kp·e, first step
    assert np.allclose(trace[1]["v"], [5 * 0.3, 5 * -0.2])  # constant estimate: no derivative


def test_landing_views_are_labelled_offsets_in_a_cone(sim):
    images, targets = landing_views(sim, "LandingPad", 4, heights=(2.0, 4.0), cone_deg=20)
    assert images.shape == (4, 3, 32, 32) and targets.shape == (4, 2)
    assert (targets.norm(dim=1) <= 4.0 * math.tan(math.radians(20)) + 1e-5).all()
    again, same = landing_views(sim, "LandingPad", 4, heights=(2.0, 4.0), cone_deg=20)
    assert torch.equal(images, again) and torch.equal(targets, same)
