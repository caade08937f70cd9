"""`report` on `render-3db analyze` rows: each analysis present gets its panel, the absent ones are named with
the flag that makes them, and the UV heat map is drawn from the tensor file a row points at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.report import classify, read_records
from confidently.report.sections.render_3db import draw
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "render-3db-analyses.jsonl"


def rows_of(*analyses: str) -> list[dict]:
    return [row for line in FIXTURE.read_text().splitlines() if (row := json.loads(line))["analysis"] in analyses]


def by_title(blocks) -> dict:
    return {block.title: block for block in blocks}


def test_absent_analyses_are_named_with_their_flags(tmp_path):
    rows = rows_of("overall", "agreement", "select_physical")
    assert {classify(r) for r in rows} == {"render-3db"}
    blocks = by_title(draw(rows, tmp_path))
    overall = rows[0]
    assert blocks["Overall"].rows == [[overall["n"], overall["correct"], f"{overall['acc']:.3f}",
                                       f"{overall['ci'][0]:.3f}–{overall['ci'][1]:.3f}"]]
    agreement = [r for r in rows if r["analysis"] == "agreement"]
    assert [row[0] for row in blocks["Simulation vs photos"].rows] == [r["object"] for r in agreement]
    assert len(blocks["Renders to photograph"].rows) == len(rows_of("select_physical"))
    missing = dict(blocks["Analyses not run"].rows)
    assert missing == {"report": "--report", "background_complexity": "--background-complexity",
                       "texture_bias": "--texture-bias --texture-labels FILE",
                       "uv_heatmap": "--uv-heatmap --object ID --tensors FILE"}
    assert not any(block.image for block in blocks.values())
    more = by_title(draw(rows + rows_of("texture_bias", "uv_heatmap"), tmp_path))  # tables only: no figures
    assert "Texture vs shape" in more and "UV heat map: mug" in more
    assert dict(more["Analyses not run"].rows) == {"report": "--report",
                                                   "background_complexity": "--background-complexity"}


def test_failure_modes_read_as_words():
    from confidently.report.sections.render_3db import _failure_modes

    failures = [r for r in rows_of("report") if r["panel"] == "failure_modes"]
    binned = {**failures[0], "kind": "control", "param": "camera.zoom_factor", "value": 0.85, "bin": [0.7, 1.0]}
    (table,) = _failure_modes([binned, *failures[1:]])
    assert len(table.rows) == len(failures) and table.rows[0][1] == "camera.zoom_factor in [0.7, 1]"
    assert [row[0] for row in table.rows] == sorted((r["kind"] for r in failures),
                                                    key=["control", "scene", "configuration"].index)
    scene = next(r for r in failures if r["kind"] == "scene" and r["rank"] == 0)
    assert next(row for row in table.rows if row[0] == "scene")[1] == f"{scene['object']} in {scene['environment']}"
    config = next(r for r in failures if r["kind"] == "configuration" and r["rank"] == 0)
    words = next(row for row in table.rows if row[0] == "configuration")[1]
    assert words.split(", ")[0] == "orientation.rotation_z = " + f"{config['config']['orientation.rotation_z']:.3g}"
    assert next(row for row in table.rows if row[0] == "scene")[5] == " ".join(scene["wrong"])


def test_the_uv_heat_map_is_drawn_from_its_tensor_file(tmp_path, monkeypatch):
    (row,) = rows_of("uv_heatmap")
    monkeypatch.chdir(tmp_path)  # paths in rows resolve from where report runs
    blocks = by_title(draw([{**row, "tensors": "uv.safetensors"}], tmp_path))
    assert blocks["UV heat map: mug"].image is None and "--tensors file" in blocks["UV heat map: mug"].caption
    pictures = []
    for value in (0.0, 1.0):
        heat = torch.full((16, 16), value)
        heat[:8] = float("nan")  # never visible
        save_artifact(tmp_path / "uv.safetensors", {"uv_accuracy": heat},
                      artifact_metadata(tool="render-3db", kind="heatmaps", axes={}))
        folder = tmp_path / f"site{value}"
        folder.mkdir()
        blocks = by_title(draw([{**row, "tensors": "uv.safetensors"}], folder))
        assert blocks["UV heat map: mug"].image == "uv-mug.png"
        pictures.append(np.asarray(Image.open(folder / "uv-mug.png").convert("RGB")))
        (tmp_path / "uv.safetensors").unlink()
    assert pictures[0].shape == pictures[1].shape and not np.array_equal(*pictures)  # the colours follow the values


def test_a_malformed_row_is_named_and_an_unknown_panel_is_left_to_others(tmp_path):
    row = next(r for r in rows_of("report") if r["kind"] == "trend")
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(rows_of("overall")[0]) + "\n" + json.dumps({**row, "spread": "wide"}) + "\n")
    with pytest.raises(InvalidInput, match="spread") as error:
        read_records(path, "rows.jsonl")
    assert error.value.line == 2
    assert classify({**row, "kind": "histogram"}) is None and classify({**row, "tool": "other"}) is None
