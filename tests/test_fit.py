"""The one fit flow (confidently.fit): skip a finished file, resume through stages bit for bit, transfer
trains only what it says, and the model file records how it was made."""

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.fit import Fit, ModelFile, NewModel, Stage, TransferFrom
from confidently.io.atomic import written_by
from confidently.models import load_model
from confidently.training import TrainConfig

DATA = "demo:shapes?classes=3&size=16&per_class=12&seed=1"
CONFIG = TrainConfig(epochs=2, batch_size=12, lr=3e-3, seed=4)


def start(out, model=None, **kwargs):
    torch.manual_seed(0)  # the model's initial weights (the command line seeds them by --seed)
    return Fit.start(out, "advtrain", DATA, model=model or NewModel("small_cnn", img_size=16), device="cpu",
                     workers=0, seed=4, **kwargs)


def two_stages():
    return [Stage("full", CONFIG), Stage("second", TrainConfig(epochs=2, batch_size=12, lr=1e-3, seed=4))]


def test_fit_writes_a_model_that_names_its_making_and_a_second_run_skips(tmp_path):
    out = tmp_path / "m.safetensors"
    seen = []
    fit = start(out, val=DATA)
    fitted = fit.run([Stage("train", CONFIG)], training={"recipe": "standard"},
                     on_epoch=lambda stage, metrics: seen.append((stage.name, metrics["epoch"], "val_acc" in metrics)))
    assert seen == [("train", 1, True), ("train", 2, True)] and len(fitted.history) == 2
    model = load_model(out)
    info = model.training_info
    assert info["tool"] == "advtrain" and info["recipe"] == "standard" and info["seed"] == 4
    assert info["config"]["epochs"] == 2 and info["data"] == fitted.data.fingerprint()
    assert written_by(out) == "advtrain" and not list(tmp_path.glob("*.ckpt"))
    assert start(out) is None  # finished: nothing to do
    assert start(out, force=True) is not None


class Stop(Exception):
    pass


def stop_in_second_stage(stage, metrics):
    if stage.name == "second":
        raise Stop


def test_an_interrupted_two_stage_fit_resumes_to_the_same_weights(tmp_path):
    whole = tmp_path / "whole.safetensors"
    start(whole).run(two_stages())

    cut = tmp_path / "cut.safetensors"
    with pytest.raises(Stop):
        start(cut).run(two_stages(), on_epoch=stop_in_second_stage)
    assert sorted(p.name for p in tmp_path.glob("cut*.ckpt")) == ["cut.safetensors.full.ckpt",
                                                                   "cut.safetensors.second.ckpt"]
    resumed = []
    start(cut, resume=True).run(two_stages(), on_epoch=lambda stage, metrics: resumed.append(
        (stage.name, metrics["epoch"])))
    assert resumed == [("second", 2)]  # the first stage and the second's first epoch were not trained again
    for key, value in load_model(whole).state_dict().items():
        assert torch.equal(value, load_model(cut).state_dict()[key]), key
    assert not list(tmp_path.glob("cut*.ckpt"))


def test_transfer_trains_only_the_new_head_and_describes_its_source(tmp_path):
    source = tmp_path / "source.safetensors"
    start(source).run([Stage("train", CONFIG)], training={"eps": 0.5})
    out = tmp_path / "target.safetensors"
    origin = TransferFrom(source, "fixed")
    start(out, origin).run([Stage("transfer", CONFIG)], training={"bn_stats": "update"})
    before, after = load_model(source).state_dict(), load_model(out).state_dict()
    head = [name for name in after if name.startswith("net.head") or name.startswith("net.fc")]
    assert head
    for name, value in after.items():
        if name not in head and "running" not in name and "num_batches" not in name:
            assert torch.equal(value, before[name]), name
    info = load_model(out).training_info
    assert info["recipe"] == "transfer" and info["mode"] == "fixed" and info["bn_stats"] == "update"
    assert info["source"]["training"]["eps"] == 0.5 and "eps" not in info  # the source's own keys stay under it


def test_transfer_refuses_a_class_count_the_data_does_not_have(tmp_path):
    source = tmp_path / "source.safetensors"
    start(source).run([Stage("train", CONFIG)])
    with pytest.raises(InvalidInput, match="num_classes is 5"):
        start(tmp_path / "t.safetensors", TransferFrom(source, num_classes=5))


def test_a_model_file_keeps_training_from_its_weights(tmp_path):
    first = tmp_path / "a.safetensors"
    start(first).run([Stage("train", CONFIG)])
    fit = start(tmp_path / "b.safetensors", ModelFile(first))
    stored = load_model(first).state_dict()
    assert all(torch.equal(value, stored[key]) for key, value in fit.model.state_dict().items())
    fit.run([Stage("more", CONFIG)], training={"init": str(first)})
    assert load_model(tmp_path / "b.safetensors").training_info["init"] == str(first)


def test_an_output_another_tool_wrote_is_refused(tmp_path):
    out = tmp_path / "notes.safetensors"
    out.write_text("mine")
    with pytest.raises(UsageError, match="did not write"):
        start(out)


def test_every_epoch_has_the_uniform_shape_the_report_draws(tmp_path):
    out = tmp_path / "m.safetensors"
    seen = []
    start(out, val=DATA).run(two_stages(), on_epoch=lambda stage, metrics: seen.append(metrics))
    assert [(m["stage"], m["epoch"], m["epochs"]) for m in seen] == [("full", 1, 2), ("full", 2, 2), ("second", 1, 2),
                                                                    ("second", 2, 2)]
    for metrics in seen:
        assert metrics["out"] == str(out) and metrics["train_nat_acc"] == metrics["train_acc"]
        assert metrics["val_nat_acc"] == metrics["val_acc"] and 0 <= metrics["val_nat_acc"] <= 1
        assert metrics["loss"] > 0 and metrics["lr"] >= 0 and "train_adv_acc" not in metrics


def read_config(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_the_run_config_is_written_beside_out_and_names_what_the_run_resolved(tmp_path):
    out = tmp_path / "m.safetensors"
    options = {"data": DATA, "epochs": 2, "lr": 0.003, "force": False, "resume": False, "seed": 4, "out": str(out)}
    fit = start(out, val=DATA, command="advtrain train", options=options, explicit=["data", "epochs", "force"])
    fit.run(two_stages(), training={"recipe": "standard"})
    config = read_config(tmp_path / "m.config.yaml")
    assert written_by(tmp_path / "m.config.yaml") == "advtrain"
    assert {k: v for k, v in config.items() if k != "confidently"} == {"data": DATA, "epochs": 2}  # set, not force
    block = config["confidently"]
    assert block["tool"] == "advtrain" and block["command"] == "advtrain train" and block["options"] == options
    assert block["seed"] == 4 and block["out"] == str(out) and block["version"]
    assert [(s["name"], s["epochs"], s["config"]["lr"]) for s in block["stages"]] == [("full", 2, 3e-3),
                                                                                     ("second", 2, 1e-3)]
    assert block["training"] == load_model(out).training_info  # what the model file says of its training
    train, val = block["data"]["train"], block["data"]["val"]
    assert train["source"] == DATA and train["images"] == 36 and train["classes"] == 3 and train["fingerprint"]
    assert val["source"] == DATA and block["model"]["arch"] == "small_cnn" and block["model"]["num_classes"] == 3


def test_the_run_config_never_overwrites_a_users_file_and_force_does(tmp_path):
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.config.yaml").write_text("mine: true\n")
    with pytest.raises(UsageError, match="m.config.yaml"):
        start(out)
    assert (tmp_path / "m.config.yaml").read_text() == "mine: true\n" and not out.exists()
    start(out, force=True).run([Stage("train", CONFIG)])
    assert written_by(tmp_path / "m.config.yaml") == "advtrain"
    start(out, force=True).run([Stage("train", CONFIG)])  # its own file: replaced without a word
    own = tmp_path / "run.config.yaml"
    own.write_text("epochs: 2\n")  # the user's --config file, named where the run writes its own config
    with pytest.raises(UsageError, match="--config"):
        start(tmp_path / "run.safetensors", force=True, options_file=own)  # even forced
    assert own.read_text() == "epochs: 2\n"


def test_a_finished_fit_leaves_its_config_alone_and_a_resumed_one_rewrites_it(tmp_path):
    cut = tmp_path / "cut.safetensors"
    with pytest.raises(Stop):
        start(cut, options={"resume": False}).run(two_stages(), on_epoch=stop_in_second_stage)
    config = tmp_path / "cut.config.yaml"
    assert read_config(config)["confidently"]["options"] == {"resume": False}  # kept beside the checkpoints
    start(cut, resume=True, options={"resume": True}).run(two_stages())
    assert read_config(config)["confidently"]["resume"] is True and not list(tmp_path.glob("cut*.ckpt"))
    before = config.read_bytes()
    assert start(cut, options={"resume": False}) is None  # nothing to do: the config of the run that made it stays
    assert config.read_bytes() == before
