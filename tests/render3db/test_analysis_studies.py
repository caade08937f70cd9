"""The thesis' studies on hand-made records and tensors whose answers are worked out by hand: background
complexity (Sobel) and its correlation with accuracy, texture vs shape bias, the UV accuracy heat map,
renders chosen for photographs and agreement with the photos."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.io.images import save_image
from confidently.render3db.analysis_images import background_complexity, pearson, sobel_complexity, spearman, uv_heatmap
from confidently.render3db.analysis_studies import agreement, select_physical, texture_bias

LABEL = 1


def step_image(size: int = 8, object_corner: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns 0-3 black, 4-7 white; with the object (label 1, bright red) on the 2×2 top-left corner."""
    rgb = torch.zeros(3, size, size, dtype=torch.uint8)
    rgb[:, :, size // 2:] = 255
    seg = torch.full((1, size, size), -1, dtype=torch.int32)
    if object_corner:
        rgb[0, :2, :2] = 255
        seg[0, :2, :2] = LABEL
    return rgb, seg


def test_sobel_complexity_of_a_step_by_hand():
    rgb, seg = step_image(object_corner=False)
    # 6×6 valid 3×3 positions; the two columns beside the step see |gx| = 4 = max/√2
    assert sobel_complexity(rgb) == pytest.approx(2 / 6 / math.sqrt(2))
    rgb, seg = step_image()
    # centres within one pixel of the object (rows 1-2 × cols 1-2) are left out: 32 remain, 12 on the edge
    assert sobel_complexity(rgb, seg[0] < 0) == pytest.approx(12 / 32 / math.sqrt(2))
    assert sobel_complexity(torch.full((3, 8, 8), 0.5)) == pytest.approx(0, abs=1e-6)
    assert sobel_complexity(rgb, torch.zeros(8, 8, dtype=torch.bool)) is None


def test_rank_correlations_by_hand():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3))  # tied ranks share 1.5
    assert spearman([1, 10, 100, 1000], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 6.5])[0, 1])
    assert pearson([1, 2], [1, 2]) is None and pearson([1, 1, 1], [1, 2, 3]) is None


def judged_record(rid, env, correct, index, obj="mug", **extra):
    return {"id": rid, "object": obj, "environment": env, "label": LABEL, "render_args": {"orientation.rotation_z": 0},
            "is_correct": correct, "prediction": [LABEL if correct else 0],
            "image": {"tensors": "r.safetensors", "key": "images", "index": index},
            "segmentation": {"tensors": "r.safetensors", "key": "segmentation", "index": index}, **extra}


def test_background_complexity_from_renders_and_from_files(tmp_path):
    edge, seg = step_image()
    plain = torch.full_like(edge, 128)
    plain[0, :2, :2] = 255  # the object itself never counts
    squares = (torch.arange(8)[:, None] // 2 + torch.arange(8)[None] // 2) % 2  # a 2-pixel checkerboard
    checker = (squares * 255).to(torch.uint8).expand(3, 8, 8).clone()
    images = torch.stack([plain, plain, edge, edge, checker, checker])
    save_artifact(tmp_path / "r.safetensors", {"images": images, "segmentation": seg.expand(6, 1, 8, 8).clone()},
                  artifact_metadata(tool="render-3db", kind="renders", ids=[str(i) for i in range(6)]))
    outcomes = [("plain", True), ("plain", True), ("edge", True), ("edge", False), ("busy", False), ("busy", False)]
    records = [judged_record(str(i), env, ok, i) for i, (env, ok) in enumerate(outcomes)]
    rows = background_complexity(records, tmp_path)
    by_env = {r["environment"]: r for r in rows if r["analysis"] == "background_complexity"}
    assert by_env["plain"]["complexity"] == pytest.approx(0, abs=1e-6)
    assert by_env["plain"]["acc"] == 1.0 and by_env["plain"]["n"] == 2
    assert by_env["edge"]["complexity"] == pytest.approx(12 / 32 / math.sqrt(2)) and by_env["edge"]["acc"] == 0.5
    assert by_env["busy"]["complexity"] > by_env["edge"]["complexity"] and by_env["busy"]["acc"] == 0.0
    assert all(0.0 <= r["complexity"] <= 1.0 for r in by_env.values())
    summary = rows[-1]
    assert summary["analysis"] == "background_correlation" and summary["environments"] == 3
    assert summary["spearman"] == pytest.approx(-1.0) and -1.0 <= summary["pearson"] < -0.5
    # the environments' own images instead: the edge image whole (no object) has 2 edge columns of 6
    folder = tmp_path / "backgrounds"
    folder.mkdir()
    for name, image in (("plain", torch.full_like(edge, 128)), ("edge", step_image(object_corner=False)[0]),
                        ("busy", checker)):
        save_image(image.float() / 255, folder / f"{name}.png")
    files = {r["environment"]: r["complexity"] for r in background_complexity(records, tmp_path, folder)[:-1]}
    assert files["edge"] == pytest.approx(2 / 6 / math.sqrt(2)) and files["plain"] == pytest.approx(0, abs=1e-6)
    (folder / "busy.png").unlink()
    with pytest.raises(InvalidInput, match="no image for environment"):
        background_complexity(records, tmp_path, folder)
    with pytest.raises(UsageError, match="with_segmentation"):
        background_complexity([{**records[0], "segmentation": None}], tmp_path)


def uv_renders(tmp_path) -> list[dict]:
    """Three 2×2 renders with UV and segmentation passes in ``r.safetensors``, and their records."""
    # 2×2 renders, a 2×2 texture; pixel (row, col) → (u, v); seg -1 is background whatever its UV says
    uv = torch.zeros(3, 2, 2, 2)
    seg = torch.full((3, 1, 2, 2), -1, dtype=torch.int32)
    # render 0 (right): texel (0,0) twice, texel (row 0, col 1); a background pixel on texel (1,1)
    uv[0, :, 0, 0], uv[0, :, 0, 1], uv[0, :, 1, 0], uv[0, :, 1, 1] = (torch.tensor(t) for t in
                                                                      ([0.1, 0.1], [0.2, 0.3], [0.9, 0.1], [0.9, 0.9]))
    seg[0, 0, 0, 0] = seg[0, 0, 0, 1] = seg[0, 0, 1, 0] = LABEL
    # render 1 (wrong): texel (0,0), texel (row 1, col 0)
    uv[1, :, 0, 0], uv[1, :, 0, 1] = torch.tensor([0.1, 0.1]), torch.tensor([0.1, 0.9])
    seg[1, 0, 0, :] = LABEL
    # render 2: another object, all texels: ignored
    uv[2] = 0.7
    seg[2] = LABEL
    save_artifact(tmp_path / "r.safetensors", {"uv": uv.half(), "segmentation": seg},
                  artifact_metadata(tool="render-3db", kind="renders", ids=["a", "b", "c"]))
    records = [{"id": rid, "object": obj, "environment": "e", "label": LABEL, "is_correct": ok, "prediction": [0],
                "uv": {"tensors": "r.safetensors", "key": "uv", "index": i},
                "segmentation": {"tensors": "r.safetensors", "key": "segmentation", "index": i}}
               for i, (rid, obj, ok) in enumerate([("a", "mug", True), ("b", "mug", False), ("c", "ball", True)])]
    return records


def test_uv_heatmap_counts_each_visible_texel_once_per_render(tmp_path):
    records = uv_renders(tmp_path)
    result = uv_heatmap(records, tmp_path, "mug", 2)
    assert result["visible"].tolist() == [[2, 1], [1, 0]] and result["correct"].tolist() == [[1, 1], [0, 0]]
    acc = result["acc"]
    assert acc[0, 0] == 0.5 and acc[0, 1] == 1.0 and acc[1, 0] == 0.0 and torch.isnan(acc[1, 1])
    assert result["row"]["visible_texels"] == 3 and result["row"]["renders"] == 2
    assert result["row"]["acc_mean"] == pytest.approx(0.5)
    with pytest.raises(UsageError, match="objects: ball, mug"):
        uv_heatmap(records, tmp_path, "cup", 2)
    with pytest.raises(UsageError, match="with_uv"):
        uv_heatmap([{**records[0], "uv": None}], tmp_path, "mug", 2)


def test_the_uv_row_names_its_tensor_file_and_report_draws_the_map_from_it(tmp_path, monkeypatch, capsys):
    from confidently.cli.app import run_app
    from confidently.report.sections.render_3db import draw
    from confidently_tools.render_3db import app

    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in uv_renders(tmp_path)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        run_app(app, "render-3db", ["analyze", "results.jsonl", "--uv-heatmap", "--object", "mug", "--tex-size", "2",
                                    "--tensors", "uv.safetensors"])
    assert done.value.code == 0
    (row,) = [r for line in capsys.readouterr().out.splitlines() if (r := json.loads(line))["analysis"] == "uv_heatmap"]
    assert row["tensors"] == "uv.safetensors" and row["visible_texels"] == 3
    (tmp_path / "site").mkdir()
    (block,) = [b for b in draw([row], tmp_path / "site") if b.title == "UV heat map: mug"]
    assert block.image == "uv-mug.png" and (tmp_path / "site" / "uv-mug.png").is_file()


def swap_record(obj, source, heading, prediction):
    label = {"mug": 1, "ball": 6}[obj]
    return {"id": f"{obj}-{source}-{heading}", "object": obj, "environment": "e", "label": label,
            "render_args": {"texture.source": source, "orientation.rotation_z": heading},
            "is_correct": prediction == label, "prediction": [prediction, 9]}


def test_texture_bias_fractions_and_drop_on_previously_correct_renders():
    zebra, tiger = "textures/zebra.png", "textures/tiger.png"
    records = [swap_record(*args) for args in [
        ("mug", "original", 0, 1), ("mug", "original", 1, 2),
        ("mug", zebra, 0, 3), ("mug", zebra, 1, 1), ("mug", tiger, 0, 1), ("mug", tiger, 1, 4),
        ("ball", "original", 0, 6), ("ball", "original", 1, 6),
        ("ball", zebra, 0, 3), ("ball", zebra, 1, 3), ("ball", tiger, 0, 6), ("ball", tiger, 1, 0)]]
    random.Random(0).shuffle(records)
    rows = {(r["by"], r["value"]): r for r in texture_bias(records, {"zebra": {3}, "tiger.png": {4}})}
    z, t, mug = rows[("texture", zebra)], rows[("texture", tiger)], rows[("object", "mug")]
    assert (z["n"], z["texture_frac"], z["shape_frac"], z["other_frac"]) == (4, 0.75, 0.25, 0.0)
    # previously correct: mug at heading 0, the ball at both; under zebra none of them stays correct
    assert z["previously_correct"] == 3 and z["acc_after"] == 0.0 and z["drop"] == 1.0
    assert (t["texture_frac"], t["shape_frac"], t["other_frac"]) == (0.25, 0.5, 0.25)
    assert t["previously_correct"] == 3 and t["acc_after"] == pytest.approx(2 / 3)
    assert t["drop"] == pytest.approx(1 / 3) and t["ci"][0] < 2 / 3 < t["ci"][1]
    assert (mug["n"], mug["texture_frac"], mug["shape_frac"], mug["previously_correct"], mug["acc_after"]) == \
        (4, 0.5, 0.5, 2, 0.5)
    with pytest.raises(UsageError, match="no class for textures/tiger.png"):
        texture_bias(records, {"zebra": {3}})
    with pytest.raises(UsageError, match="material control"):
        texture_bias([{**r, "render_args": {"orientation.rotation_z": 0}} for r in records], {"zebra": {3}})


def test_select_physical_is_seeded_by_id_not_order():
    records = [{"id": f"r{i}", "object": obj, "environment": "e", "label": 0, "render_args": {},
                "is_correct": i % 3 == 0, "prediction": [0]} for i in range(40) for obj in ("mug",)]
    records += [{"id": "h1", "object": "hammer", "environment": "e", "label": 0, "render_args": {},
                 "is_correct": True, "prediction": [0]}]
    chosen = select_physical(records, 3, seed=0)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert select_physical(shuffled, 3, seed=0) == chosen
    mug = [r for r in chosen if r["object"] == "mug"]
    assert [r["is_correct"] for r in mug] == [True] * 3 + [False] * 3 and len({r["id"] for r in mug}) == 6
    assert [r["id"] for r in chosen if r["object"] == "hammer"] == ["h1"]  # only one exists, none wrong
    other = {r["id"] for r in select_physical(records, 3, seed=1)}
    assert other != {r["id"] for r in chosen}
    with pytest.raises(UsageError):
        select_physical(records, 0, seed=0)


def test_agreement_ppv_npv_by_hand():
    sim = {"r1": True, "r2": True, "r3": True, "r4": False, "r5": False, "r6": True}
    records = [{"id": rid, "object": "hammer" if rid == "r6" else "mug", "environment": "e", "label": 0,
                "is_correct": ok, "prediction": [0]} for rid, ok in sim.items()]
    photos = {"r1": True, "r2": True, "r3": False, "r4": False, "r5": True, "r6": True}
    rows = {r["object"]: r for r in agreement(records, photos)}
    assert rows["mug"]["agreement"] == pytest.approx(3 / 5) and rows["mug"]["ppv"] == pytest.approx(2 / 3)
    assert rows["mug"]["npv"] == 0.5 and (rows["mug"]["sim_correct"], rows["mug"]["sim_wrong"]) == (3, 2)
    assert rows["hammer"]["agreement"] == 1.0 and rows["hammer"]["npv"] is None
    assert rows["all"]["n"] == 6 and rows["all"]["agreement"] == pytest.approx(4 / 6)
    with pytest.raises(InvalidInput, match="match no judged render: r9"):
        agreement(records, {**photos, "r9": True})
