"""`render-3db dashboard`: a run's records as 3DB's log folder, served by 3DB's own dashboard (threedboard),
checked over HTTP and, where Chromium is installed, in a headless browser."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from confidently.errors import InvalidInput
from confidently.render3db.dashboard import control_key, dashboard_row, write_dashboard

CONTROLS = [{"module": "orientation", "rotation_x": 0, "rotation_y": 0, "rotation_z": [-3, 3]},
            {"module": "imagenet_c", "corruption_name": ["fog", "gaussian_noise"], "severity": 2}]


@pytest.fixture
def run_folder(experiment_file, varied_model, run_tool, tmp_path):
    """A finished run (null engine, 8 renders as PNGs, judged) and its dashboard folder."""
    path = experiment_file(policy={"module": "grid", "samples_per_dim": 2}, controls=CONTROLS,
                           environments=[{"id": "grey", "solid": [0.5, 0.5, 0.5]}],
                           inference={"model": str(varied_model)})
    done = run_tool("render-3db", "run", path, "--out", "runs/results.jsonl", "--images-dir", "runs/renders")
    assert done.returncode == 0, done.stderr
    (tmp_path / "labels.json").write_text(json.dumps([f"class{i}" for i in range(10)]))
    done = run_tool("render-3db", "dashboard", "runs/results.jsonl", "board", "--class-map", "labels.json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "runs/results.jsonl").read_text().splitlines()]
    return tmp_path, records


def test_the_folder_has_3dbs_layout(run_folder):
    root, records = run_folder
    rows = [json.loads(line) for line in (root / "board/details.log").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records] and len(rows) == 8
    assert {tuple(r) for r in rows} == {("id", "model", "environment", "output_type", "is_correct", "prediction",
                                         "render_args")}
    for row, record in zip(rows, records, strict=True):
        assert row["model"] == record["object"] and row["is_correct"] == record["is_correct"]
        assert row["prediction"] == record["prediction"]
        assert row["render_args"]["OrientationControl.rotation_z"] == record["render_args"]["orientation.rotation_z"]
        assert row["render_args"]["ImagenetCControl.corruption_name"] == \
            record["render_args"]["imagenet_c.corruption_name"]
        image = root / "board/images" / f"{row['id']}_rgb.png"
        assert image.read_bytes() == (root / "runs" / record["image"]).read_bytes()
    assert json.loads((root / "board/class_maps.json").read_text())[3] == "class3"


def test_rows_refuse_what_the_dashboard_cannot_show(tmp_path):
    assert control_key("obj_loc_in_frame.x_shift") == "ObjLocInFrameControl.x_shift"
    with pytest.raises(InvalidInput, match="no prediction"):
        dashboard_row({"id": "a", "object": "mug", "environment": "e", "is_correct": True, "output_type": "classes"})
    detection = {"id": "d", "object": "mug", "environment": "e", "output_type": "bboxes", "is_correct": False,
                 "precision": 0.5, "recall": 1.0, "is_correct_nolabel": True, "precision_nolabel": 1.0,
                 "recall_nolabel": 1.0, "is_valid": True, "boxes": [[0.1, 0.2, 0.5, 0.6, 0.9, 3]], "loss": None}
    row = dashboard_row(detection)
    assert row["boxes"] == detection["boxes"] and "loss" not in row and list(row)[-1] == "render_args"
    base = {"object": "mug", "environment": "e", "is_correct": True, "prediction": [1], "image": "x.png"}
    with pytest.raises(InvalidInput, match="one experiment"):
        write_dashboard([{**base, "id": "a", "render_args": {"camera.zoom_factor": 1}},
                         {**base, "id": "b", "render_args": {"scale.factor": 1}}], tmp_path, tmp_path / "board")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(run_folder):
    """threedboard's server on the dashboard folder; yields (url, root, records)."""
    root, records = run_folder
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "threedboard", str(root / "board"), "--port", str(port),
                               "--no-browser"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/log.json", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                time.sleep(0.1)
        yield url, root, records
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_threedboard_serves_the_run(served):
    url, root, records = served
    data = json.loads(urllib.request.urlopen(url + "/log.json", timeout=10).read())
    params = data["parameters"]
    assert "render_args.OrientationControl.rotation_z" in params and "is_correct" in params
    assert sorted(row[params.index("id")] for row in data["data"]) == sorted(r["id"] for r in records)
    correct = {row[params.index("id")]: row[params.index("is_correct")] for row in data["data"]}
    assert correct == {r["id"]: r["is_correct"] for r in records}
    assert data["class_map"][0] == "class0"
    first = records[0]["id"]
    assert urllib.request.urlopen(f"{url}/images/{first}", timeout=10).read() == \
        (root / "board/images" / f"{first}_rgb.png").read_bytes()
    assert b"<html" in urllib.request.urlopen(url + "/", timeout=10).read()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_dashboard_shows_the_run_in_a_browser(served, tmp_path):
    """3DB's dashboard page, run by headless Chromium, loads the run and draws one tile per render."""
    url, root, records = served
    page = f"{url}/?url={url.removeprefix('http://')}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
             "--virtual-time-budget=15000", f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    shown = {r["id"] for r in records if f"images/{r['id']}" in dom}
    assert shown == {r["id"] for r in records}
    shot = tmp_path / "dashboard.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", page], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
