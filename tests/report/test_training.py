"""`report`'s training curves from the trainers' real per-epoch records: `advtrain train` (adversarial, with
validation) and `certify fit`'s two stages; runs told apart; records of other kinds go to their own sections."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from confidently.report import build_site, classify, read_records
from confidently.report.sections.training import runs
from PIL import Image

from tests.conftest import BIN, ROOT

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}
DIGITS = '--data "demo:digits?size=16" --split train --val "demo:digits?size=16" --val-split test'


def shell(cwd: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with the metric records of a real 2-epoch adversarial `advtrain train` and a real `certify fit`
    (one epoch on full images, one on ablations), tiny_resnet on 16-pixel digits."""
    folder = tmp_path_factory.mktemp("curves")
    for command in (f"advtrain train {DIGITS} --arch tiny_resnet --eps 1 --epochs 2 --lr 0.01 "
                    "--out robust.safetensors > robust.metrics.jsonl",
                    f"certify fit {DIGITS} --arch tiny_resnet --ablation-size 4 --pretrain-epochs 1 --epochs 1 "
                    "--pretrain-lr 1e-2 --out base.safetensors > base.metrics.jsonl"):
        result = shell(folder, command)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


def records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_advtrain_train_records_draw_loss_and_clean_and_adversarial_accuracy(trained):
    records = records_of(trained / "robust.metrics.jsonl")
    assert [(r["kind"], r["stage"], r["epoch"], r["epochs"], r["out"]) for r in records] == [
        ("metric", "train", 1, 2, "robust.safetensors"), ("metric", "train", 2, 2, "robust.safetensors")]
    for r in records:
        assert r["train_adv_acc"] == r["train_acc"] and {"train_nat_acc", "val_nat_acc", "val_adv_acc", "lr"} <= set(r)
    result = shell(trained, "report robust.metrics.jsonl --out site")
    assert result.returncode == 0, result.stderr
    html = (trained / "site" / "index.html").read_text()
    assert 'id="training"' in html and "Training curves: robust.safetensors · train" in html
    figure = np.asarray(Image.open(trained / "site" / "training" / "curves-1-robust.safetensors-train.png")
                        .convert("RGB"))
    assert figure.shape[1] >= 1000 and figure.shape[0] >= 300
    colours = {tuple(c) for c in figure.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # train (tab:blue) and val (tab:orange) curves


def test_certify_fit_draws_one_figure_per_stage_from_a_pipe(trained):
    records = records_of(trained / "base.metrics.jsonl")
    assert [(r["stage"], r["epoch"]) for r in records] == [("full", 1), ("ablation", 1)]
    assert "val_nat_acc" in records[0] and "val_nat_acc" not in records[1]  # stage 2 is not validated
    result = shell(trained, "cat base.metrics.jsonl | report - robust.metrics.jsonl --out both")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (trained / "both" / "training").iterdir()) == [
        "curves-1-base.safetensors-full.png", "curves-2-base.safetensors-ablation.png",
        "curves-3-robust.safetensors-train.png"]


def test_eval_records_alone_have_no_curves_and_other_kinds_keep_their_sections(tmp_path):
    evals = read_records(FIXTURES / "advtrain.jsonl", "advtrain.jsonl")
    drawn, _ = build_site(evals, tmp_path / "evals")
    assert "training" not in drawn and not (tmp_path / "evals" / "training").exists()
    assert 'id="training"' not in (tmp_path / "evals" / "index.html").read_text()
    curves = read_records(FIXTURES / "training.jsonl", "training.jsonl")
    drawn, skipped = build_site([*curves, *evals], tmp_path / "mixed")
    assert drawn == {"advtrain": len(evals), "training": len(curves)} and skipped == 0
    summary = {"tool": "advtrain", "kind": "summary", "cmd": "transfer", "top1": 0.5, "mode": "fixed",
               "source": "a.safetensors"}
    assert classify(summary) == "advtrain" and {classify(r) for r in curves} == {"training"}


def test_runs_are_told_apart_by_model_file_stage_and_restarts():
    def epoch(n, out="a.safetensors", stage="train", **extra):
        return {"tool": "advtrain", "kind": "metric", "cmd": "train", "out": out, "stage": stage, "epoch": n,
                "loss": 1.0 / n, **extra}

    records = [epoch(1), epoch(2), epoch(1, "b.safetensors"), epoch(3), epoch(1), epoch(1, stage="second")]
    found = runs(records)
    assert [(label, [r["epoch"] for r in rs]) for label, rs in found] == [
        ("a.safetensors · train", [1, 2, 3]),  # a resumed run's records continue it
        ("b.safetensors · train", [1]),
        ("a.safetensors · train (run 2)", [1]),  # trained again from epoch 1
        ("a.safetensors · second", [1])]
    older = [{"tool": "certify", "kind": "metric", "cmd": "fit", "stage": "full", "epoch": 1, "loss": 1.0,
              "val_acc": 0.5}]  # no out, no uniform names: drawn all the same
    assert runs(older)[0][0] == "certify fit · full"
