"""`unadv-patch airsim` as a user runs it: `serve-fake` (the test double) in one process, `eval` and `land`
through the real AirSim client in others; an unreachable simulator exits 3 with one clear line."""

import importlib.util
import json
import os
import select
import socket
import subprocess

import numpy as np
import pytest
import torch
from confidently.unadversarial.airsim import CLIENT_MODULES

from tests.conftest import tool_path

if not any(importlib.util.find_spec(name) for name in CLIENT_MODULES):
    pytest.skip("no AirSim client (airsim or cosysairsim) installed", allow_module_level=True)
pytest.importorskip("msgpackrpc")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from confidently.models import create_model, save_model
    from PIL import Image

    root = tmp_path_factory.mktemp("airsim")
    torch.manual_seed(0)
    save_model(create_model("tiny_resnet", 10), root / "model.safetensors")
    Image.fromarray(np.tile(np.array([255, 0, 0], np.uint8), (8, 8, 1))).save(root / "unadv.png")
    return root


@pytest.fixture(scope="module")
def fake_port():
    proc = subprocess.Popen([tool_path("unadv-patch"), "airsim", "serve-fake", "--port", "0", "--width", "32",
                             "--height", "32", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "serve-fake printed nothing within 120 s"
        (record,) = [json.loads(proc.stdout.readline())]
        assert record["cmd"] == "airsim-serve-fake" and record["simulator"] == "fake" and record["port"] > 0
        yield record["port"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_eval_against_the_fake_with_the_real_client(run_tool, files, fake_port):
    result = run_tool("unadv-patch", "airsim", "eval", "--port", fake_port, "--connect-timeout", "5",
                      "--object", "Target", "--model", "model.safetensors", "--class-id", "3", "--locations", "1",
                      "--grid", "2", "--texture-png", "unadv.png", "--weather", "fog:0.5", cwd=files)
    assert result.returncode == 0, result.stderr
    frames = [r for r in result.records if r["cmd"] == "airsim-eval"]
    summaries = [r for r in result.records if r["cmd"] == "airsim-eval-summary"]
    assert list(result.records[0])[:2] == ["tool", "version"] and result.records[0]["tool"] == "unadv-patch"
    assert len(frames) == 2 * 8 and {r["arm"] for r in frames} == {"original", "unadv"}
    for r in frames:
        assert r["simulator"] == "fake" and r["weather"] == {"fog": 0.5} and r["location"] == 0
        assert len(r["cam_xyz"]) == 3 and isinstance(r["top1"], bool) and isinstance(r["top5_correct"], bool)
    assert [(s["arm"], s["n"]) for s in summaries] == [("original", 8), ("unadv", 8)]
    assert all(0 <= s["top1_acc"] <= s["top5_acc"] <= 1 for s in summaries)
    assert "test double" in result.stderr


def test_land_against_the_fake(run_tool, files, fake_port):
    result = run_tool("unadv-patch", "airsim", "land", "--port", fake_port, "--connect-timeout", "5",
                      "--regressor", "oracle", "--episodes", "1", "--weather", "dust:0.3", cwd=files)
    assert result.returncode == 0, result.stderr
    (episode, summary) = result.records
    assert episode["cmd"] == "airsim-land" and episode["simulator"] == "fake" and episode["weather"] == {"dust": 0.3}
    assert episode["landed"] is True and episode["final_err_m"] < 0.1 and episode["time_s"] > 0
    assert summary["cmd"] == "airsim-land-summary" and summary["success_rate"] == 1.0


def test_unreachable_simulator_exits_3_with_one_line(run_tool, files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_tool("unadv-patch", "airsim", "eval", "--port", port, "--connect-timeout", "0.5",
                      "--object", "Target", "--model", "model.safetensors", "--class-id", "0", cwd=files, timeout=60)
    assert result.returncode == 3 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "no AirSim simulator answers" in lines[0]


def test_bad_weather_is_a_usage_error(run_tool, files):
    result = run_tool("unadv-patch", "airsim", "land", "--regressor", "oracle", "--weather", "smog:0.5", cwd=files)
    assert result.returncode == 2 and "--weather" in result.stderr
