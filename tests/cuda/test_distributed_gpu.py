"""``torchrun --nproc-per-node 1`` on NCCL: the collectives every data-parallel command reaches run on the GPU
(one rank joins the process group too; on the CPU the same tests run on gloo)."""

from __future__ import annotations

import json

from confidently.models import load_model

from tests.cuda.conftest import torchrun

DIGITS = ("--data", "demo:digits?size=16", "--split", "train")


def records(done) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_advtrain_train_and_transfer_join_an_nccl_group(device, tmp_path):
    trained = torchrun("advtrain", "train", *DIGITS, "--val", "demo:digits?size=16", "--val-split", "test",
                       "--epochs", "2", "--eps", "0.5", "--amp", "--device", device, "--out", "robust.safetensors",
                       cwd=tmp_path)
    assert f"1 rank(s), {'nccl' if device == 'cuda' else 'gloo'} backend" in trained.stderr  # the group it joined
    metrics = records(trained)
    assert [m["epoch"] for m in metrics] == [1, 2] and all("val_adv_acc" in m for m in metrics)
    assert load_model(tmp_path / "robust.safetensors").training_info["eps"] == 0.5
    moved = torchrun("advtrain", "transfer", "--source", "robust.safetensors", "--data", "demo:digits?size=16",
                     "--split", "test", "--mode", "fixed", "--epochs", "1", "--device", device,
                     "--out", "fixed.safetensors", cwd=tmp_path)
    assert [r["kind"] for r in records(moved)].count("summary") == 1
    assert (tmp_path / "fixed.safetensors").exists()


def test_plant_backdoor_experiment_under_torchrun_on_the_gpu(device, tmp_path):
    done = torchrun("plant-backdoor", "experiment", "--source", "demo:digits?size=8", "--source-split", "train",
                    "--source-test-split", "test", "--source-classes", "0-4", "--target", "demo:digits?size=8",
                    "--target-split", "train", "--target-test-split", "test", "--target-classes", "5-9",
                    "--size", "2", "--color", "1,1,1", "--rates", "0.1", "--modes", "fixed", "--seeds", "0",
                    "--epochs-source", "2", "--epochs-target", "1", "--device", device, "--summary", "grid.json",
                    cwd=tmp_path)
    runs = [r for r in records(done) if r["kind"] == "run"]
    assert len(runs) == 1 and runs[0]["target_clean_acc"] > 0.3
    assert json.loads((tmp_path / "grid.json").read_text())
