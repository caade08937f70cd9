"""`advtrain` as a user runs it: train → eval → attack → features → transfer → import, and bad input."""

import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.io.model_files import read_model_file
from confidently.models import create_model, load_model
from confidently.schema import schema_errors
from safetensors.torch import load_file, save_file

DIGITS = ["--data", "demo:digits", "--split", "train"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("advtrain")


@pytest.fixture(scope="module")
def models(workdir):
    """A standard and an eps-1 (l2) tiny ResNet on digits, trained through the CLI."""
    import os
    import subprocess

    from tests.conftest import tool_path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for name, eps in (("std", "0"), ("robust", "1")):
        proc = subprocess.run([tool_path("advtrain"), "train", *DIGITS, "--val", "demo:digits", "--val-split", "test",
                               "--epochs", "4", "--eps", eps, "--out", f"{name}.safetensors"], cwd=workdir,
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        results[name] = [json.loads(line) for line in proc.stdout.splitlines()]
    return results


def test_train_writes_metrics_and_a_model_file(models, workdir):
    metrics = models["robust"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["kind"] == "metric" and m["eps"] == 1.0 and "val_adv_acc" in m for m in metrics)
    _, meta = read_model_file(workdir / "robust.safetensors")
    assert schema_errors(meta, "model-metadata") == []
    training = meta["training"]
    assert training["recipe"] == "adversarial" and training["eps"] == 1.0 and training["attack_steps"] == 3
    assert not (workdir / "robust.safetensors.ckpt").exists()  # checkpoint removed after a finished run


def test_rerun_is_a_no_op_without_force(run_tool, workdir, models):
    before = (workdir / "std.safetensors").stat().st_mtime_ns
    result = run_tool("advtrain", "train", *DIGITS, "--epochs", "1", "--out", "std.safetensors", cwd=workdir)
    assert result.returncode == 0 and result.stdout == "" and "nothing to do" in result.stderr
    assert (workdir / "std.safetensors").stat().st_mtime_ns == before


def test_eval_robust_model_beats_standard_at_its_eps(run_tool, workdir, models):
    rows = {}
    for name in ("std", "robust"):
        result = run_tool("advtrain", "eval", "--model", f"{name}.safetensors", "--data", "demo:digits", "--split",
                          "test", "--eps", "0,1", "--steps", "10", cwd=workdir)
        assert result.returncode == 0, result.stderr
        rows[name] = {r["eps"]: r for r in result.records}
    images, labels = collect(open_dataset("demo:digits", "test"))
    for name in rows:
        model = load_model(workdir / f"{name}.safetensors").eval()
        with torch.no_grad():
            clean = float((model(images).argmax(1) == labels).float().mean())
        assert rows[name][0.0]["nat_acc"] == rows[name][1.0]["nat_acc"] == pytest.approx(clean)  # measured, not assumed
        assert rows[name][1.0]["adv_acc"] <= rows[name][1.0]["nat_acc"]  # robust <= clean
    assert rows["robust"][1.0]["adv_acc"] > rows["std"][1.0]["adv_acc"] + 0.1
    assert rows["std"][1.0]["adv_acc"] < rows["std"][1.0]["nat_acc"] - 0.3


def test_eval_does_not_depend_on_the_batch_size(run_tool, workdir, models):
    args = ["eval", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test", "--constraint", "linf",
            "--eps", "0.3", "--steps", "1", "--step-size", "0.01", "--random-start", "--restarts", "2"]
    rows = [run_tool("advtrain", *args, "--batch-size", size, cwd=workdir) for size in ("7", "256")]
    assert all(r.returncode == 0 for r in rows), rows[0].stderr
    assert rows[0].records == rows[1].records  # starts drawn by (seed, id), not by batch position
    assert rows[0].records[0]["adv_acc"] < rows[0].records[0]["nat_acc"]


def test_eval_shards_merge_into_the_unsharded_records(run_tool, workdir, models):
    args = ["eval", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test", "--constraint", "linf",
            "--eps", "0,0.3", "--steps", "1", "--step-size", "0.01", "--random-start"]
    whole = run_tool("advtrain", *args, cwd=workdir)
    assert whole.returncode == 0, whole.stderr
    for i in range(3):
        part = run_tool("advtrain", *args, "--shard", f"{i}/3", cwd=workdir)
        assert part.returncode == 0, part.stderr
        assert all(r["shard"] == f"{i}/3" and r["n"] in (119, 120) for r in part.records)
        (workdir / f"eval-{i}.jsonl").write_text(part.stdout)
    merged = run_tool("advtrain", "eval-merge", "eval-2.jsonl", "eval-0.jsonl", "eval-1.jsonl", cwd=workdir)
    assert merged.returncode == 0, merged.stderr
    assert merged.records == whole.records and whole.records[1]["adv_acc"] < whole.records[1]["nat_acc"]
    missing = run_tool("advtrain", "eval-merge", "eval-0.jsonl", "eval-1.jsonl", cwd=workdir)
    assert missing.returncode == 3 and "2/3 missing" in missing.stderr
    twice = run_tool("advtrain", "eval-merge", "eval-0.jsonl", "eval-0.jsonl", "eval-1.jsonl", "eval-2.jsonl",
                     cwd=workdir)
    assert twice.returncode == 3 and "twice" in twice.stderr


def test_attack_writes_a_dataset_other_tools_read(run_tool, workdir, models):
    result = run_tool("advtrain", "attack", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test",
                      "--constraint", "linf", "--eps", "8/255", "--steps", "5", "--random-start", "--shard-out",
                      "adv.safetensors", cwd=workdir)
    assert result.returncode == 0, result.stderr
    records = result.records
    assert len(records) == 359 and all(schema_errors(r, "image-record") == [] for r in records)
    assert all(r["advtrain"]["norm"] <= 8 / 255 + 1e-6 for r in records)
    (workdir / "adv.jsonl").write_text(result.stdout)
    adversarial = open_dataset(workdir / "adv.jsonl")
    clean = open_dataset("demo:digits", "test")
    assert adversarial.ids == clean.ids
    assert not torch.equal(collect(adversarial)[0], collect(clean)[0])
    fooled = sum(r["advtrain"]["pred_adv"] != r["label"] for r in records)
    assert fooled > sum(r["advtrain"]["pred_clean"] != r["label"] for r in records)
    half = run_tool("advtrain", "attack", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test",
                    "--constraint", "linf", "--eps", "8/255", "--steps", "5", "--random-start", "--shard", "1/2",
                    "--shard-out", "adv-1.safetensors", cwd=workdir)
    by_id = {r["id"]: r["advtrain"]["pred_adv"] for r in records}
    assert all(by_id[r["id"]] == r["advtrain"]["pred_adv"] for r in half.records)  # (seed, id) randomness


@pytest.fixture(scope="module")
def digits32(workdir):
    """32 test digits as PNGs and a manifest: AutoAttack's parts on a CPU in seconds."""
    import subprocess

    from tests.conftest import tool_path

    proc = subprocess.run([tool_path("dataset"), "export", "demo:digits", "--split", "test", "--limit", "32", "--out",
                           "d32"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (workdir / "d32.jsonl").write_text(proc.stdout)
    return "d32.jsonl"


def test_eval_with_pgd_and_autoattack_reports_each_and_the_worst_case(run_tool, workdir, models, digits32):
    small = ["--aa-steps", "5", "--aa-targets", "2", "--queries", "50"]
    args = ["eval", "--model", "std.safetensors", "--data", digits32, "--eps", "0,1", "--steps", "10", *small]
    both = run_tool("advtrain", *args, "--attack", "pgd,autoattack", "--batch-size", "16", cwd=workdir)
    assert both.returncode == 0, both.stderr
    clean, attacked = both.records
    for record in both.records:
        assert record["attack"] == "pgd,autoattack" and set(record["by_attack"]) == {"pgd", "autoattack"}
        assert (record["aa_steps"], record["aa_targets"], record["queries"], record["batch_size"]) == (5, 2, 50, 16)
        assert record["n"] == 32 and {"nat_acc", "mpc_nat", "adv_acc", "mpc_adv", "steps", "tallies"} <= set(record)
    assert all(v["adv_acc"] == clean["nat_acc"] for v in clean["by_attack"].values())  # eps 0: nothing to attack
    each = [attacked["by_attack"][name]["adv_acc"] for name in ("pgd", "autoattack")]
    assert attacked["adv_acc"] <= min(each) and max(each) < attacked["nat_acc"]
    assert set(attacked["tallies"]) == {"nat", "adv", "adv:pgd", "adv:autoattack"}
    assert "autoattack acc" in both.stderr and "worst" in both.stderr
    pgd = run_tool("advtrain", *args, cwd=workdir)  # the default: PGD alone, records as before
    assert pgd.returncode == 0, pgd.stderr
    assert pgd.records[1]["attack"] == "pgd" and "by_attack" not in pgd.records[1]
    assert "aa_steps" not in pgd.records[1] and "batch_size" not in pgd.records[1]  # PGD: any batch size
    assert pgd.records[1]["adv_acc"] == attacked["by_attack"]["pgd"]["adv_acc"]
    again = run_tool("advtrain", *args, "--attack", "pgd,autoattack", "--batch-size", "16", cwd=workdir)
    assert again.records == both.records  # each batch seeded by (seed, its ids): a rerun repeats the numbers


def test_eval_merge_sums_the_shards_of_several_attacks(run_tool, workdir, models, digits32):
    args = ["eval", "--model", "std.safetensors", "--data", digits32, "--eps", "0.3", "--constraint", "linf",
            "--steps", "3", "--attack", "pgd,square", "--queries", "20"]
    for i in range(2):
        part = run_tool("advtrain", *args, "--shard", f"{i}/2", cwd=workdir)
        assert part.returncode == 0, part.stderr
        (workdir / f"aa-{i}.jsonl").write_text(part.stdout)
    merged = run_tool("advtrain", "eval-merge", "aa-1.jsonl", "aa-0.jsonl", cwd=workdir)
    assert merged.returncode == 0, merged.stderr
    record, = merged.records
    assert record["n"] == 32 and "shard" not in record and set(record["by_attack"]) == {"pgd", "square"}
    tallies = record["tallies"]
    for name in ("pgd", "square"):
        correct = sum(tallies[f"adv:{name}"]["class_correct"])
        assert record["by_attack"][name]["adv_acc"] == pytest.approx(correct / 32)
    assert record["adv_acc"] == pytest.approx(sum(tallies["adv"]["class_correct"]) / 32)
    assert record["adv_acc"] <= min(v["adv_acc"] for v in record["by_attack"].values())


def test_attack_writes_square_examples_as_a_dataset(run_tool, workdir, models, digits32):
    result = run_tool("advtrain", "attack", "--model", "std.safetensors", "--data", digits32, "--constraint", "linf",
                      "--eps", "0.2", "--attack", "square", "--queries", "100", "--shard-out", "square.safetensors",
                      cwd=workdir)
    assert result.returncode == 0, result.stderr
    records = result.records
    assert len(records) == 32 and all(schema_errors(r, "image-record") == [] for r in records)
    assert all(r["advtrain"]["attack"] == "square" and r["advtrain"]["queries"] == 100 for r in records)
    assert all(r["advtrain"]["norm"] <= 0.2 + 1e-6 for r in records)
    fooled = sum(r["advtrain"]["pred_adv"] != r["label"] for r in records)
    assert fooled > sum(r["advtrain"]["pred_clean"] != r["label"] for r in records)
    (workdir / "square.jsonl").write_text(result.stdout)
    accuracy = run_tool("advtrain", "eval", "--model", "std.safetensors", "--data", "square.jsonl", "--eps", "0",
                        cwd=workdir)
    assert accuracy.returncode == 0, accuracy.stderr
    assert accuracy.records[0]["nat_acc"] == pytest.approx(1 - fooled / 32)  # the examples, read back, still fool


def test_attacks_without_torchattacks_say_what_to_install(run_in_process, workdir, models, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchattacks", None)  # as if it were not installed
    for args in (["eval", "--eps", "1", "--attack", "pgd,apgd-ce"],
                 ["attack", "--attack", "autoattack", "--shard-out", "aa.safetensors"]):
        result = run_in_process("advtrain", *args, "--model", "std.safetensors", "--data", "demo:digits",
                                "--split", "test", cwd=workdir)
        assert result.returncode == 3, result.stderr
        assert "torchattacks" in result.stderr and "pip install --no-deps torchattacks" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (workdir / "aa.safetensors").exists()


def test_features_shard(run_tool, workdir, models):
    result = run_tool("advtrain", "features", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test",
                      "--out", "feats.safetensors", cwd=workdir)
    assert result.returncode == 0, result.stderr
    from confidently.io.artifacts import load_artifact

    tensors, meta = load_artifact(workdir / "feats.safetensors")
    assert tensors["features"].shape == (359, 128) and meta["tool"] == "advtrain"
    assert result.records[5]["advtrain"]["features"]["index"] == 5


def test_transfer_fixed_and_full(run_tool, workdir, models):
    manifest = run_tool("dataset", "export", "demo:shapes?classes=4&per_class=30", "--out", "shapes", cwd=workdir)
    (workdir / "shapes.jsonl").write_text(manifest.stdout)
    for mode in ("fixed", "full"):
        result = run_tool("advtrain", "transfer", "--source", "robust.safetensors", "--data", "shapes.jsonl",
                          "--val", "shapes.jsonl", "--mode", mode, "--epochs", "3", "--out", f"t-{mode}.safetensors",
                          cwd=workdir)
        assert result.returncode == 0, result.stderr
        summary = result.records[-1]
        assert summary["kind"] == "summary" and summary["mode"] == mode and summary["source_eps"] == 1.0
        assert 0 <= summary["top1"] <= 1
        model = load_model(workdir / f"t-{mode}.safetensors")
        assert model.num_classes == 4 and model.classes[0] == "red circle"
        assert model.training_info["source"]["training"]["eps"] == 1.0


def test_import_safetensors_and_pickles(run_tool, workdir):
    source = create_model("tiny_resnet", 3).eval()
    robustness_style = {f"module.model.{k}": v for k, v in source.net.state_dict().items()}
    robustness_style.update({f"module.attacker.model.{k}": v for k, v in source.net.state_dict().items()})
    robustness_style["module.normalizer.new_mean"] = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)
    robustness_style["module.normalizer.new_std"] = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
    torch.save({"model": robustness_style, "epoch": 3}, workdir / "robust.pt")
    refused = run_tool("advtrain", "import", "robust.pt", "--arch", "tiny_resnet", "--out", "imp.safetensors",
                       cwd=workdir)
    assert refused.returncode == 3 and "--trust-pickle" in refused.stderr and not (workdir / "imp.safetensors").exists()
    accepted = run_tool("advtrain", "import", "robust.pt", "--arch", "tiny_resnet", "--trust-pickle", "--out",
                        "imp.safetensors", cwd=workdir)
    assert accepted.returncode == 0, accepted.stderr
    imported = load_model(workdir / "imp.safetensors")
    assert imported.mean == pytest.approx((0.1, 0.2, 0.3)) and imported.num_classes == 3
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(imported.net(x), source.net(x))
    save_file(source.net.state_dict(), workdir / "plain.safetensors")
    plain = run_tool("advtrain", "import", "plain.safetensors", "--arch", "tiny_resnet", "--out", "p.safetensors",
                     cwd=workdir)
    assert plain.returncode == 0, plain.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["train", *DIGITS, "--eps", "-1", "--out", "x.safetensors"], 2, "eps must be >= 0"),
    (["train", *DIGITS, "--constraint", "l3", "--eps", "1", "--out", "x.safetensors"], 2, "unknown norm"),
    (["train", *DIGITS, "--eps", "1", "--attack-steps", "0", "--out", "x.safetensors"], 2, "0 steps"),
    (["train", *DIGITS, "--num-classes", "5", "--out", "x.safetensors"], 3, "--num-classes"),
    (["train", *DIGITS, "--arch", "tiny_vit", "--img-size", "2", "--out", "x.safetensors"], 3, "cannot take"),
    (["train", *DIGITS, "--eps", "1/zero", "--out", "x.safetensors"], 2, "not a number"),
    (["eval", "--model", "std.safetensors", "--data", "five.jsonl"], 3, "outside the model's 10 classes"),
    (["transfer", "--source", "std.safetensors", "--data", "five.jsonl", "--num-classes", "3", "--out", "t.st"], 3,
     "--num-classes is 3"),
    (["eval", "--model", "five.jsonl", "--data", "five.jsonl"], 3, "not a safetensors file"),
    (["eval", "--model", "std.safetensors", "--data", "five.jsonl", "--attack", "pgd,cw"], 2, "unknown attack 'cw'"),
    (["attack", "--model", "std.safetensors", "--data", "five.jsonl", "--attack", "pgd,square", "--shard-out",
      "x.safetensors"], 2, "one attack"),
    (["attack", "--model", "std.safetensors", "--data", "five.jsonl", "--attack", "square", "--target-label", "1",
      "--shard-out", "x.safetensors"], 2, "untargeted"),
])
def test_bad_input(run_in_process, workdir, models, args, code, words):
    from confidently.io.images import save_image

    save_image(torch.rand(3, 32, 32), workdir / "img" / "a.png")
    (workdir / "five.jsonl").write_text('{"id":"a","image":"img/a.png","label":12}\n{"id":"b","image":"img/a.png",'
                                        '"label":0}\n')
    result = run_in_process("advtrain", *args, cwd=workdir)
    assert result.returncode == code, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / "x.safetensors").exists()


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_log_and_write_once(workdir):
    """`torchrun --nproc-per-node 2 advtrain train`: one metric line per epoch, one model file."""
    import os
    import subprocess
    import sys

    from tests.conftest import tool_path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           tool_path("advtrain"), "train", *DIGITS, "--epochs", "2", "--eps", "0.5", "--out",
                           "ddp.safetensors"], cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert load_model(workdir / "ddp.safetensors").training_info["eps"] == 0.5


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """An ImageNet-layout folder of mixed-size JPEGs (one truncated) and a random-weight resnet18 at 224."""
    from confidently.models import save_model

    from tests.photos import make_imagenet_folder

    root = make_imagenet_folder(tmp_path_factory.mktemp("imagenet"), train_per_class=0, val_per_class=4,
                                truncated=True)
    torch.manual_seed(0)
    save_model(create_model("resnet18", 3, img_size=224), root / "resnet18.safetensors")
    return root


def test_eval_streams_an_imagenet_folder_with_a_timm_model(run_tool, photo_folder):
    """Mixed sizes, greyscale, CMYK, 16-bit and EXIF photos at 224: a truncated JPEG stops the run naming its
    file, or is skipped with --skip-invalid; the folder packed into WebDataset tars gives the same records
    with other workers and batch size."""
    args = ["eval", "--model", photo_folder / "resnet18.safetensors", "--split", "val", "--eps", "0,1/255",
            "--constraint", "linf", "--steps", "1"]
    broken = run_tool("advtrain", *args, "--data", photo_folder, "--workers", "0")
    assert broken.returncode == 3 and "truncated.JPEG" in broken.stderr and "Traceback" not in broken.stderr
    serial = run_tool("advtrain", *args, "--data", photo_folder, "--workers", "0", "--batch-size", "5",
                      "--skip-invalid")
    assert serial.returncode == 0, serial.stderr
    errors = [r for r in serial.records if "error" in r]
    assert len(errors) == 1 and "truncated.JPEG" in errors[0]["error"]
    evals = [r for r in serial.records if r.get("kind") == "eval"]
    assert [r["n"] for r in evals] == [16, 16] and evals[0]["tallies"]["nat"]["class_n"] == [8, 4, 4]
    packed = run_tool("dataset", "pack", photo_folder, "--out", photo_folder / "tars", "--split", "val",
                      "--shard-count", "4", "--skip-invalid", "-q")
    assert packed.returncode == 0, packed.stderr
    tars = run_tool("advtrain", *args, "--data", photo_folder / "tars", "--workers", "2", "--batch-size", "16")
    assert tars.returncode == 0, tars.stderr
    def same(record):
        return {k: v for k, v in record.items() if k not in ("data", "data_fingerprint")}
    assert [same(r) for r in tars.records] == [same(r) for r in evals]


@pytest.mark.slow
def test_eval_under_torchrun_splits_the_data_by_rank_and_prints_one_run(run_tool, workdir, models):
    """Two gloo ranks each evaluate half of the shard (and of an unsharded run) and sum their counts: rank 0
    prints exactly the records of one process."""
    import os
    import subprocess
    import sys

    from tests.conftest import real_tool_path

    args = ["eval", "--model", "robust.safetensors", "--data", "demo:digits", "--split", "test", "--eps", "0,1",
            "--steps", "3", "--workers", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                real_tool_path("advtrain")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for shard in ([], ["--shard", "1/3"]):
        ranks = subprocess.run([*torchrun, *args, *shard], cwd=workdir, capture_output=True, text=True, env=env,
                               timeout=600)
        assert ranks.returncode == 0, ranks.stderr[-3000:]
        one = run_tool("advtrain", *args, *shard, cwd=workdir)
        assert one.returncode == 0, one.stderr
        assert [json.loads(line) for line in ranks.stdout.splitlines()] == one.records


def test_attack_features_and_training_take_the_folder_and_skip_what_does_not_decode(run_tool, photo_folder,
                                                                                   tmp_path):
    """Every command that streams a dataset honours --skip-invalid: the truncated JPEG is one error record
    (once, however many epochs meet it) and the other 16 photos are attacked, featurised and trained on at 224."""
    common = ["--model", photo_folder / "resnet18.safetensors", "--data", photo_folder, "--split", "val",
              "--workers", "0", "--skip-invalid"]
    features = run_tool("advtrain", "features", *common, "--out", tmp_path / "f.safetensors")
    attack = run_tool("advtrain", "attack", *common, "--steps", "1", "--eps", "1/255", "--shard-out",
                      tmp_path / "adv.safetensors")
    for result in (features, attack):
        assert result.returncode == 0, result.stderr
        errors = [r for r in result.records if "error" in r]
        assert len(errors) == 1 and "truncated.JPEG" in errors[0]["error"]
        assert len([r for r in result.records if "advtrain" in r]) == 16
    assert tuple(load_file(tmp_path / "f.safetensors")["features"].shape) == (16, 512)
    assert tuple(load_file(tmp_path / "adv.safetensors")["images"].shape) == (16, 3, 224, 224)
    refused = run_tool("advtrain", "train", "--data", photo_folder, "--split", "val", "--arch", "tiny_resnet",
                       "--img-size", "32", "--epochs", "1", "--workers", "0", "--out", tmp_path / "m.st", cwd=tmp_path)
    assert refused.returncode == 3 and "truncated.JPEG" in refused.stderr and not (tmp_path / "m.st").exists()
    trained = run_tool("advtrain", "train", "--data", photo_folder, "--split", "val", "--arch", "tiny_resnet",
                       "--img-size", "32", "--epochs", "2", "--batch-size", "8", "--augment", "train", "--workers",
                       "0", "--skip-invalid", "--out", tmp_path / "m.st", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert [r.get("epoch") for r in trained.records] == [None, 1, 2]
    assert "truncated.JPEG" in trained.records[0]["error"] and (tmp_path / "m.st").exists()


@pytest.fixture(scope="module")
def packed_train(tmp_path_factory):
    """The train split of a small photo folder and the WebDataset tars `dataset pack` makes of it."""
    import subprocess

    from tests.conftest import tool_path
    from tests.photos import make_imagenet_folder

    root = make_imagenet_folder(tmp_path_factory.mktemp("train-photos"), train_per_class=6, val_per_class=0,
                                special=False)
    proc = subprocess.run([tool_path("dataset"), "pack", str(root), "--out", str(root / "tars"), "--split", "train",
                           "--shard-count", "3", "-q"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root


def test_train_and_transfer_stream_webdataset_tars(run_tool, packed_train, tmp_path):
    """Tar shards train like the folder they were packed from (PGD starts and augmentation seeded per record:
    the same run twice gives the same model; the data fingerprint is the folder's), and transfer reads them."""
    args = ["--arch", "tiny_resnet", "--img-size", "32", "--epochs", "2", "--batch-size", "6", "--eps", "0.5",
            "--augment", "train", "--workers", "2"]
    runs = [run_tool("advtrain", "train", "--data", packed_train / "tars", *args, "--out", tmp_path / f"{name}.st",
                     cwd=tmp_path) for name in ("a", "b")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    first, second = ([{k: v for k, v in m.items() if k not in ("seconds", "out")} for m in r.records] for r in runs)
    assert [m["epoch"] for m in first] == [1, 2] and first == second
    weights = [read_model_file(tmp_path / f"{name}.st")[0] for name in ("a", "b")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    folder = open_dataset(packed_train, "train")
    assert load_model(tmp_path / "a.st").training_info["data"] == folder.fingerprint()
    moved = run_tool("advtrain", "transfer", "--source", tmp_path / "a.st", "--data", packed_train / "tars",
                     "--epochs", "1", "--batch-size", "6", "--out", tmp_path / "t.st", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert load_model(tmp_path / "t.st").num_classes == 3


def test_a_streamed_record_with_a_label_beyond_the_model_is_named(run_tool, packed_train, tmp_path):
    result = run_tool("advtrain", "train", "--data", packed_train / "tars", "--num-classes", "2", "--arch",
                      "tiny_resnet", "--img-size", "32", "--epochs", "1", "--workers", "0", "--out",
                      tmp_path / "m.st", cwd=tmp_path)
    assert result.returncode == 3 and "outside the model's 2 classes" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.st").exists()


@pytest.mark.slow
def test_transfer_under_torchrun_validates_in_parts_and_prints_once(run_tool, workdir, models):
    """`torchrun --nproc-per-node 2 advtrain transfer --val`: one metric line per epoch and one summary; each
    rank scored half of the validation data with rank 0's model (batch norm statistics included), and the
    summed figure is what one process gets from the written model. --sync-bn, which needs GPUs under torchrun,
    is refused on CPU ranks; in one process it changes nothing and is recorded with the run."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import real_tool_path

    shapes = "demo:shapes?classes=5&per_class=40"
    args = ["transfer", "--source", "robust.safetensors", "--data", shapes, "--split", "train", "--val", shapes,
            "--val-split", "test", "--mode", "full", "--epochs", "2", "--batch-size", "16", "--workers", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                real_tool_path("advtrain")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*torchrun, *args, "--out", "ddp-transfer.safetensors"], cwd=workdir, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["metric", "metric", "summary"]
    assert records[-1]["top1"] == records[1]["val_nat_acc"]
    one = run_tool("advtrain", "eval", "--model", "ddp-transfer.safetensors", "--data", shapes, "--split", "test",
                   "--eps", "0", cwd=workdir)
    assert one.returncode == 0, one.stderr
    assert one.records[0]["nat_acc"] == records[-1]["top1"]
    refused = subprocess.run([*torchrun, *args, "--epochs", "1", "--sync-bn", "--out", "sync.safetensors"],
                             cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode != 0 and "CUDA" in refused.stderr and not (workdir / "sync.safetensors").exists()
    single = run_tool("advtrain", *args, "--epochs", "1", "--sync-bn", "--out", "sync.safetensors", cwd=workdir)
    assert single.returncode == 0, single.stderr
    assert load_model(workdir / "sync.safetensors").training_info["config"]["sync_bn"] is True
    config = yaml.safe_load((workdir / "sync.config.yaml").read_text())
    assert config["sync_bn"] is True


def test_amp_runs_the_attacks_in_mixed_precision_on_cuda_and_changes_nothing_on_the_cpu(run_tool, run_in_process,
                                                                                         workdir, models, monkeypatch):
    import confidently.adversarial

    args = ["eval", "--model", "std.safetensors", "--data", "demo:digits", "--split", "test", "--constraint", "linf",
            "--eps", "0,0.05", "--steps", "3"]
    fp32, cpu_amp = (run_tool("advtrain", *args, *flag, cwd=workdir) for flag in ([], ["--amp"]))
    assert fp32.returncode == cpu_amp.returncode == 0, cpu_amp.stderr
    assert cpu_amp.records == fp32.records and all("amp" not in r for r in fp32.records)  # the CPU: as in train
    # where mixed precision exists (CUDA: bf16, else fp16), the attacks run in it and the records say so
    monkeypatch.setattr(confidently.adversarial, "mixed_precision", lambda device: torch.bfloat16)
    mixed = run_in_process("advtrain", *args, "--amp", cwd=workdir)
    assert mixed.returncode == 0, mixed.stderr
    n = fp32.records[1]["n"]
    for exact, amp in zip(fp32.records, mixed.records, strict=True):
        assert amp.pop("amp") == "bfloat16" and amp["nat_acc"] == exact["nat_acc"]  # clean accuracy: fp32
        assert abs(amp["adv_acc"] - exact["adv_acc"]) * n <= max(1, 0.01 * n)  # within 1 point or one example
        assert {k: v for k, v in amp.items() if "acc" not in k and k not in ("tallies", "mpc_adv")} == \
            {k: v for k, v in exact.items() if "acc" not in k and k not in ("tallies", "mpc_adv")}
    assert fp32.records[1]["adv_acc"] < fp32.records[1]["nat_acc"] - 0.1
    attacked = run_in_process("advtrain", "attack", "--model", "std.safetensors", "--data", "demo:digits", "--split",
                              "test", "--eps", "0.05", "--steps", "2", "--amp", "--shard-out", "amp.safetensors",
                              cwd=workdir)
    assert attacked.returncode == 0, attacked.stderr
    assert all(r["advtrain"]["amp"] == "bfloat16" for r in attacked.records)
