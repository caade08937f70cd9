"""The config a training writes beside its --out (confidently.io.run_config): its name, what it holds (a flag and
a --config value both show, and what the run resolved), that it is a --config file that trains the same model
again, and that it never replaces a user's file."""

import yaml
from confidently.cli.app import _config_defaults
from confidently.io.atomic import written_by
from confidently.io.run_config import config_path, config_text
from confidently.models import load_model

DATA = "demo:shapes?classes=3&size=16&per_class=12&seed=1"
TRAIN = ["train", "--data", DATA, "--arch", "small_cnn", "--batch-size", "12"]


def test_the_config_is_named_after_out_and_its_block_is_skipped_by_config(tmp_path):
    assert str(config_path("runs/robust.safetensors")) == "runs/robust.config.yaml"
    assert config_path("model").name == "model.config.yaml"
    text = config_text(tool="advtrain", command="advtrain train", options={"epochs": 3, "lr": 0.1, "force": True},
                       explicit={"epochs", "force"}, resolved={"seed": 0}, out="robust.safetensors")
    assert text.startswith("# Written by `advtrain train` beside robust.safetensors")
    loaded = yaml.safe_load(text)
    assert loaded == {"epochs": 3, "confidently": {"tool": "advtrain", "command": "advtrain train", "options": {
        "epochs": 3, "lr": 0.1, "force": True}, "seed": 0}}
    (tmp_path / "robust.config.yaml").write_text(text)
    assert written_by(tmp_path / "robust.config.yaml") == "advtrain"
    assert _config_defaults(["--config", str(tmp_path / "robust.config.yaml")]) == {"epochs": 3}
    (tmp_path / "mine.yaml").write_text("tool: advtrain\n")
    assert written_by(tmp_path / "mine.yaml") is None


def test_advtrain_train_writes_the_effective_config_and_it_trains_the_same_model_again(run_tool, tmp_path):
    (tmp_path / "mine.yaml").write_text("lr: 0.01\nweight_decay: 0.0\n")
    first = run_tool("advtrain", *TRAIN, "--config", "mine.yaml", "--epochs", "1", "--out", "m.safetensors")
    assert first.returncode == 0, first.stderr
    config = yaml.safe_load((tmp_path / "m.config.yaml").read_text())
    block = config.pop("confidently")
    assert config == {"arch": "small_cnn", "batch_size": 12, "data": DATA, "epochs": 1, "lr": 0.01,
                      "out": "m.safetensors", "weight_decay": 0.0}  # the flags and the --config values
    assert block["tool"] == "advtrain" and block["command"] == "advtrain train" and block["version"]
    assert block["options"]["lr"] == 0.01 and block["options"]["epochs"] == 1 and block["options"]["eps"] == "0"
    assert block["options"]["schedule"] == "onecycle" and block["options"]["resume"] is False  # defaults too
    assert block["stages"][0]["config"]["lr"] == 0.01 and block["data"]["train"]["source"] == DATA
    assert block["training"]["recipe"] == "standard" and block["seed"] == 0
    again = run_tool("advtrain", "train", "--config", "m.config.yaml", "--out", "again.safetensors")
    assert again.returncode == 0, again.stderr
    assert [r["loss"] for r in again.records] == [r["loss"] for r in first.records]
    trained, repeated = load_model(tmp_path / "m.safetensors"), load_model(tmp_path / "again.safetensors")
    assert all(value.equal(repeated.state_dict()[key]) for key, value in trained.state_dict().items())


def test_a_users_file_where_the_config_goes_is_refused_before_training(run_tool, tmp_path):
    mine = b"# my notes on this model\nlr: 1\n"
    (tmp_path / "m.config.yaml").write_bytes(mine)
    refused = run_tool("ablate", "fit", "--data", DATA, "--arch", "small_cnn", "--epochs", "1", "--patch-size", "4",
                       "--out", "m.safetensors")
    assert refused.returncode == 2 and "m.config.yaml" in refused.stderr and refused.stdout == ""
    assert (tmp_path / "m.config.yaml").read_bytes() == mine and not (tmp_path / "m.safetensors").exists()
    forced = run_tool("ablate", "fit", "--data", DATA, "--arch", "small_cnn", "--epochs", "1", "--patch-size", "4",
                      "--out", "m.safetensors", "--force")
    assert forced.returncode == 0, forced.stderr
    assert written_by(tmp_path / "m.config.yaml") == "ablate"
    records = forced.records
    assert [(r["kind"], r["cmd"], r["stage"], r["epoch"], r["epochs"]) for r in records] == [
        ("metric", "fit", "fit", 1, 1)]
    assert "train_acc" in records[0] and "train_nat_acc" not in records[0]  # trained on patches removed
