"""`render-3db` as a user runs it: validate | run --dry-run | run, --no-eval shards other tools read, resume,
shards, analyze with charts, and bad input with the documented exit codes."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import yaml
from confidently.cli.app import run_app
from confidently.data.loader import collect
from confidently.io.atomic import FOLDER_MARKER
from confidently.schema import schema_errors

from tests.conftest import BIN, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}
EXPERIMENT = {
    "objects": [{"id": "mug", "builtin": "mug", "label": 1, "color": [0.8, 0.3, 0.2]},
                {"id": "ball", "builtin": "sphere", "label": 6}],
    "environments": [{"id": "grey", "solid": [0.5, 0.5, 0.5]}, {"id": "busy", "procedural": "checker"}],
    "inference": {"model": "tiny.safetensors"},
    "evaluation": {"module": "classification", "args": {"topk": 2}},
    "render_args": {"engine": "null", "resolution": 32, "samples": 4, "with_segmentation": True},
    "policy": {"module": "grid", "samples_per_dim": 2},
    "controls": [{"module": "orientation", "rotation_x": 0, "rotation_y": 0,
                  "rotation_z": {"range": [-3.14159, 3.14159], "endpoint": False}},
                 {"module": "camera", "view_point_x": 0, "view_point_y": -1, "view_point_z": 0.3,
                  "zoom_factor": "(0.7, 1.3)", "focal_length": 50},
                 {"module": "imagenet_c", "corruption_name": {"values": ["fog", "gaussian_noise"]}, "severity": 2}],
}
PLANNED = 2 * 2 * 2 * 2 * 2  # pairs × heading × zoom × corruption


def shell(cwd, command):
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=300)


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def without_timing(rows):
    return {r["id"]: {k: v for k, v in r.items() if k not in ("timing_s", "image", "segmentation")} for r in rows}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from confidently.models import create_model, save_model

    root = tmp_path_factory.mktemp("render3db")
    torch.manual_seed(1)
    save_model(create_model("tiny_resnet", 10), root / "tiny.safetensors")
    (root / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    done = shell(root, "render-3db run --config exp.yaml --images-shard renders.safetensors --out results.jsonl "
                       "--summary summary.json")  # 3DB's habit: the experiment file given as --config
    assert done.returncode == 0, done.stderr
    return root


def test_validate_dry_run_and_run_agree_and_records_follow_the_schema(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    status, out, _ = in_process(capsys, "validate", "exp.yaml")
    assert status == 0 and json.loads(out)["jobs"] == PLANNED
    status, out, _ = in_process(capsys, "run", "exp.yaml", "--dry-run")
    plan = records(out)
    results = records((workspace / "results.jsonl").read_text())
    assert len(plan) == len(results) == PLANNED
    assert [r["id"] for r in plan] == [r["id"] for r in results] and [r["order"] for r in results] == list(
        range(PLANNED))
    declared = {"orientation": ["rotation_x", "rotation_y", "rotation_z"],
                "camera": ["view_point_x", "view_point_y", "view_point_z", "zoom_factor", "aperture", "focal_length"],
                "imagenet_c": ["corruption_name", "severity"]}
    keys = [f"{c}.{p}" for c, ps in declared.items() for p in ps]
    for record in plan + results:
        assert schema_errors(record, "render-3db-record") == []
        assert list(record["render_args"]) == keys
    for record in results:
        assert isinstance(record["is_correct"], bool) and len(record["prediction"]) == 2
        assert record["is_correct"] == (record["label"] in record["prediction"])
        assert record["segmentation"]["key"] == "segmentation"
    for key in ("orientation.rotation_z", "camera.zoom_factor", "imagenet_c.corruption_name"):
        assert len({r["render_args"][key] for r in results}) == 2  # every searched parameter is varied
    summary = json.loads((workspace / "summary.json").read_text())
    assert summary["renders"] == PLANNED and summary["accuracy"] == pytest.approx(
        sum(r["is_correct"] for r in results) / PLANNED)
    assert 0 < summary["workers_ready_seconds"] < summary["seconds"]


def test_no_eval_shard_feeds_other_tools_and_matches_the_records(workspace):
    from confidently.data import open_dataset
    from confidently.models import load_model

    made = shell(workspace, "render-3db run exp.yaml --no-eval --images-shard images.safetensors > images.jsonl")
    assert made.returncode == 0, made.stderr
    rows = records(made.stdout) or records((workspace / "images.jsonl").read_text())
    assert len(rows) == PLANNED and all("is_correct" not in r for r in rows)
    for row in rows:
        assert schema_errors(row, "image-record") == [] and schema_errors(row, "render-3db-record") == []
    images, labels = collect(open_dataset(workspace / "images.safetensors"))  # any --data option reads it
    judged = {r["id"]: r for r in records((workspace / "results.jsonl").read_text())}
    model = load_model(workspace / "tiny.safetensors")
    with torch.inference_mode():
        top2 = model(images.float()).topk(2).indices
    for row in rows:
        index = row["image"]["index"]
        assert judged[row["id"]]["prediction"] == top2[index].tolist()
        assert labels[index] == row["label"] == judged[row["id"]]["label"]
    accuracy = sum(int(labels[i]) in top2[i].tolist() for i in range(len(labels))) / len(labels)
    assert accuracy == pytest.approx(sum(r["is_correct"] for r in judged.values()) / PLANNED)
    assert 0 < accuracy < 1


def test_resume_after_a_kill_and_shards_give_the_full_run(workspace, capsys, monkeypatch):
    lines = (workspace / "results.jsonl").read_text().splitlines(keepends=True)
    (workspace / "killed.jsonl").write_text("".join(lines[:11]) + lines[11][:40])  # a torn last line
    run = shell(workspace, "render-3db run exp.yaml --resume killed.jsonl --out killed.jsonl")
    assert run.returncode == 0, run.stderr
    full = without_timing(records((workspace / "results.jsonl").read_text()))
    resumed = records((workspace / "killed.jsonl").read_text())
    assert len(resumed) == PLANNED and without_timing(resumed) == full
    monkeypatch.chdir(workspace)
    sharded = []
    for index in range(3):
        status, out, _ = in_process(capsys, "run", "exp.yaml", "--shard", f"{index}/3")
        assert status == 0
        sharded += records(out)
    assert len(sharded) == PLANNED and without_timing(sharded) == full


def test_analyze_tables_heatmap_tensors_and_charts(workspace):
    done = shell(workspace, "cat results.jsonl | render-3db analyze - --by rotation_z --heatmap rotation_z,zoom_factor "
                            "--boxplot object,environment --stability imagenet_c.corruption_name "
                            "--tensors heat.safetensors --plots charts")
    assert done.returncode == 0, done.stderr
    rows = records(done.stdout)
    results = records((workspace / "results.jsonl").read_text())
    assert rows[0]["analysis"] == "overall" and rows[0]["n"] == PLANNED
    by = [r for r in rows if r["analysis"] == "by"]
    assert len(by) == 2 and sum(r["n"] for r in by) == PLANNED
    for row in by:
        mine = [r["is_correct"] for r in results if r["render_args"]["orientation.rotation_z"] == row["value"]]
        assert row["acc"] == pytest.approx(sum(mine) / len(mine)) and row["ci"][0] <= row["acc"] <= row["ci"][1]
    from safetensors.torch import load_file

    heat = load_file(workspace / "heat.safetensors")
    assert heat["heatmap/orientation.rotation_z,camera.zoom_factor/acc"].shape == (2, 2)
    assert int(heat["heatmap/orientation.rotation_z,camera.zoom_factor/n"].sum()) == PLANNED
    charts = sorted(p.name for p in (workspace / "charts").iterdir() if p.name != FOLDER_MARKER)
    assert charts == ["boxplot_object_environment.png", "by_orientation.rotation_z.png",
                      "heatmap_orientation.rotation_z_camera.zoom_factor.png"]
    assert any(r["analysis"] == "stability" for r in rows)


def in_process(capsys, *argv):
    """The real CLI in this process (fast: no interpreter start), for the many bad-input cases."""
    from confidently_tools.render_3db import _experiment_flag_to_argument, app

    with pytest.raises(SystemExit) as exit_info:
        run_app(app, "render-3db", _experiment_flag_to_argument(list(argv)))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize("change, code, message", [
    ({"controls": [{"module": "rotation"}]}, 2, "unknown control 'rotation'; choose background, camera"),
    ({"controls": [{"module": "camera", "zoom": 2}]}, 2, "valid parameters: view_point_x"),
    ({"controls": [{"module": "camera", "zoom_factor": [0, 2]}]}, 2, "outside the domain"),
    ({"objects": [{"id": "pot", "path": "teapot.obj", "label": 0}]}, 3, "teapot.obj does not exist"),
    ({"policy": {"module": "grid", "samples_per_dim": 400}}, 2, "plans 1,280,000 renders, more than --max-renders"),
    ({"objects": [{"id": "mug", "builtin": "mug", "label": 12}]}, 2, "the model has 10 classes"),
])
def test_bad_experiments_exit_with_a_clear_message(workspace, capsys, monkeypatch, change, code, message):
    monkeypatch.chdir(workspace)
    (workspace / "bad.yaml").write_text(yaml.safe_dump({**EXPERIMENT, **change}))
    status, _, err = in_process(capsys, "run", "--config", "bad.yaml")
    assert status == code and message in err.replace("\n", " "), err


def test_guards_and_usage_errors(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    status, out, _ = in_process(capsys, "run", "exp.yaml", "--dry-run", "--max-renders", "10", "--force")
    assert status == 0 and len(records(out)) == PLANNED
    status, _, err = in_process(capsys, "run", "exp.yaml", "--dry-run", "--max-renders", "10")
    assert status == 2 and "--force" in err
    status, _, err = in_process(capsys, "run", "exp.yaml", "--no-eval")
    assert status == 2 and "--images-shard" in err
    status, _, err = in_process(capsys, "analyze", "results.jsonl", "--by", "tilt")
    assert status == 2 and "unknown parameter 'tilt'" in err
    status, out, _ = in_process(capsys, "controls")
    assert status == 0 and {r["name"] for r in records(out)} >= {"camera", "orientation", "texture", "imagenet_c"}


def test_a_kill_9_keeps_finished_records_and_resume_completes_the_run(workspace):
    import signal
    import time

    (workspace / "long.yaml").write_text(yaml.safe_dump({**EXPERIMENT, "policy": {"module": "grid",
                                                                                  "samples_per_dim": 6}}))
    planned = 2 * 2 * 6 * 6 * 2
    command = "render-3db run long.yaml --images-shard long.safetensors --shard-size 100 --chunk-size 1 -q"
    run = subprocess.Popen(["bash", "-c", f"exec {command} --out long-killed.jsonl"], cwd=workspace, env=ENV,
                           stderr=subprocess.DEVNULL)
    out = workspace / "long-killed.jsonl"
    deadline = time.monotonic() + 120
    while ((not out.exists() or out.read_text().count("\n") < 110) and run.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = [json.loads(line) for line in out.read_text().splitlines(keepends=True) if line.endswith("\n")]
    assert 110 <= len(kept) < 200  # records reached --out as renders finished, not a shard at a time
    resumed = shell(workspace, f"{command} --resume long-killed.jsonl --out long-killed.jsonl")
    assert resumed.returncode == 0, resumed.stderr
    rows = records(out.read_text())
    assert len(rows) == planned == len({r["id"] for r in rows})
    full = shell(workspace, "render-3db run long.yaml -q")
    assert without_timing(rows) == without_timing(records(full.stdout))
    from confidently.io.artifacts import load_artifact_metadata

    for row in rows:  # every record's image is on disk, in the row its record names
        shard = load_artifact_metadata(workspace / row["image"]["tensors"])
        assert shard["ids"][row["image"]["index"]] == row["id"]


def test_outputs_render_3db_did_not_write_are_refused_without_force(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    for option, name in (("--out", "mine.jsonl"), ("--summary", "mine.json"), ("--images-shard", "mine.safetensors")):
        (workspace / name).write_text("my notes\n")
        status, _, err = in_process(capsys, "run", "exp.yaml", "--limit", "2", "-q", option, name)
        assert status == 2 and name in err and "--force" in err
        assert (workspace / name).read_text() == "my notes\n"
    (workspace / "pictures").mkdir()
    (workspace / "pictures" / "holiday.jpg").write_bytes(b"mine")
    status, _, err = in_process(capsys, "run", "exp.yaml", "--limit", "2", "-q", "--images-dir", "pictures")
    assert status == 2 and "--force" in err
    for _ in range(2):  # render-3db's own outputs may be written again
        again = shell(workspace, "render-3db run exp.yaml --limit 2 -q --out own.jsonl --summary own.json "
                                 "--images-dir own-pictures")
        assert again.returncode == 0, again.stderr
    forced = shell(workspace, "render-3db run exp.yaml --limit 2 -q --out mine.jsonl --images-dir pictures --force")
    assert forced.returncode == 0 and (workspace / "pictures" / "holiday.jpg").read_bytes() == b"mine"


def test_analyze_the_thesis_studies_from_a_real_run(tmp_path):
    """A run with UV and segmentation passes and a texture swap, then every study through the real CLI:
    background complexity, texture vs shape, the UV heat map, renders to photograph and agreement."""
    from confidently.io.images import save_image
    from confidently.models import create_model, save_model
    from safetensors.torch import load_file

    torch.manual_seed(1)
    save_model(create_model("tiny_resnet", 10), tmp_path / "tiny.safetensors")
    stripes = torch.zeros(3, 16, 16)
    stripes[:, :, ::4] = 1.0
    save_image(stripes, tmp_path / "stripes.png")
    experiment = {**EXPERIMENT,
                  "environments": [{"id": "grey", "solid": [0.5, 0.5, 0.5]}, {"id": "sky", "procedural": "gradient"},
                                   {"id": "busy", "procedural": "checker"}],
                  "render_args": {**EXPERIMENT["render_args"], "with_uv": True},
                  "controls": [EXPERIMENT["controls"][0], {"module": "texture",
                                                           "source": {"values": ["original", "stripes.png"]}}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    (tmp_path / "textures.json").write_text(json.dumps({"stripes": 3}))
    done = shell(tmp_path, "render-3db run exp.yaml --images-shard r.safetensors --out results.jsonl && "
                           "render-3db analyze results.jsonl --background-complexity --texture-bias --texture-labels "
                           "textures.json --uv-heatmap --object mug --tex-size 16 --select-physical 2 --tensors "
                           "uv.safetensors --plots charts")
    assert done.returncode == 0, done.stderr
    results, rows = records((tmp_path / "results.jsonl").read_text()), records(done.stdout)
    assert len(results) == 2 * 3 * 2 * 2  # objects × environments × headings × textures
    assert not any(r["analysis"] == "by" for r in rows)  # a study alone does not add the default table
    complexity = {r["environment"]: r for r in rows if r["analysis"] == "background_complexity"}
    assert complexity["grey"]["complexity"] < 0.05 < complexity["busy"]["complexity"] <= 1.0
    assert all(r["n"] == 8 and r["measured_renders"] == 8 for r in complexity.values())
    (correlation,) = [r for r in rows if r["analysis"] == "background_correlation"]
    assert correlation["environments"] == 3 and correlation["source"] == "renders"
    bias = {(r["by"], r["value"]): r for r in rows if r["analysis"] == "texture_bias"}
    swapped = [r for r in results if r["render_args"]["texture.source"] == "stripes.png"]
    assert bias[("texture", "stripes.png")]["n"] == len(swapped) == 12
    assert bias[("texture", "stripes.png")]["texture_frac"] == pytest.approx(
        sum(r["prediction"][0] == 3 for r in swapped) / 12)
    (uv,) = [r for r in rows if r["analysis"] == "uv_heatmap"]
    heat = load_file(tmp_path / "uv.safetensors")
    acc, visible = heat["uv_accuracy"], heat["uv_visible"]
    assert acc.shape == (16, 16) and uv["renders"] == 12 and 0 < uv["visible_texels"] == int((visible > 0).sum())
    assert torch.isnan(acc[visible == 0]).all() and ((acc[visible > 0] >= 0) & (acc[visible > 0] <= 1)).all()
    assert int(visible.max()) <= 12
    charts = sorted(p.name for p in (tmp_path / "charts").iterdir() if p.name != FOLDER_MARKER)
    assert charts == ["background_complexity.png", "texture_bias_texture.source.png", "uv_accuracy_mug.png"]
    chosen = [r for r in rows if r["analysis"] == "select_physical"]
    assert {r["object"] for r in chosen} == {"mug", "ball"} and all(len(
        [c for c in chosen if c["object"] == o and c["is_correct"] == ok]) <= 2 for o in ("mug", "ball")
        for ok in (True, False))
    # the photos disagree with the renders exactly once
    photos = [{"id": r["id"], "is_correct": r["is_correct"] != (i == 0)} for i, r in enumerate(chosen)]
    (tmp_path / "photos.jsonl").write_text("".join(json.dumps(p) + "\n" for p in photos))
    done = shell(tmp_path, "render-3db analyze results.jsonl --agreement photos.jsonl")
    assert done.returncode == 0, done.stderr
    (total,) = [r for r in records(done.stdout) if r["analysis"] == "agreement" and r["object"] == "all"]
    assert total["n"] == len(chosen) and total["agreement"] == pytest.approx(1 - 1 / len(chosen))
    done = shell(tmp_path, "render-3db analyze results.jsonl --uv-heatmap")
    assert done.returncode == 2 and "--object" in done.stderr
