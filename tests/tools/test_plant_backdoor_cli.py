"""`plant-backdoor` as a user runs it: export → poison → advtrain train → asr; stamp; trigger files; bad input."""

import json
import os

import pytest
import torch
from confidently.data.loader import collect
from confidently.io.images import load_image
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    import subprocess

    from tests.conftest import tool_path

    root = tmp_path_factory.mktemp("backdoor")
    for split in ("train", "test"):
        proc = subprocess.run([tool_path("dataset"), "export", "demo:digits", "--split", split, "--out", split],
                              cwd=root, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        (root / f"{split}.jsonl").write_text(proc.stdout)
    return root


@pytest.fixture(scope="module")
def backdoored(digits):
    """digits plus bd.safetensors, a tiny ResNet trained on a 10 % relabel poison (8-pixel square → class 0)."""
    import subprocess

    from tests.conftest import tool_path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    poisoned = subprocess.run([tool_path("plant-backdoor"), "poison", "train.jsonl", "--mode", "relabel",
                               "--target-label", "0", "--rate", "0.1", "--size", "8", "--ids-out", "ids.jsonl",
                               "--summary", "counts.json"], cwd=digits, capture_output=True, text=True, env=env)
    assert poisoned.returncode == 0, poisoned.stderr
    (digits / "poisoned.jsonl").write_text(poisoned.stdout)
    trained = subprocess.run([tool_path("advtrain"), "train", "--data", "poisoned.jsonl", "--arch", "tiny_resnet",
                              "--epochs", "4", "--shift", "2", "--out", "bd.safetensors", "-q"], cwd=digits,
                             capture_output=True, text=True, env=env)
    assert trained.returncode == 0, trained.stderr
    return digits


def test_relabel_poison_trains_a_backdoor_that_asr_measures(run_tool, backdoored):
    digits = backdoored
    rows = [json.loads(line) for line in (digits / "poisoned.jsonl").read_text().splitlines()]
    hit = [r for r in rows if r["poisoned"]]
    assert len(hit) == round(0.1 * len(rows)) and all(r["label"] == 0 and r["orig_label"] != 0 for r in hit)
    assert all(r["trigger"] == {"type": "square", "size": 8} for r in hit)
    assert all(r["trigger"] is None and "orig_label" not in r for r in rows if not r["poisoned"])
    ids = [json.loads(line)["id"] for line in (digits / "ids.jsonl").read_text().splitlines()]
    assert ids == [r["id"] for r in hit]
    counts = json.loads((digits / "counts.json").read_text())
    assert counts["n_poisoned"] == len(hit) and counts["rate_of"] == "dataset"

    measured = run_tool("plant-backdoor", "asr", "--data", "test.jsonl", "--model", "bd.safetensors", "--size", "8",
                        "--target-label", "0", cwd=digits)
    assert measured.returncode == 0, measured.stderr
    (bias,) = measured.records
    assert bias["kind"] == "bias" and bias["clean_acc"] > 0.8
    assert bias["asr_targeted"] > 0.8 and bias["asr"] > 0.7 and bias["top_shift_class"] == 0
    clean_model = run_tool("plant-backdoor", "asr", "--data", "test.jsonl", "--model", "bd.safetensors",
                           "--trigger", "square", "--size", "8", "--pos", "br", cwd=digits)
    assert clean_model.records[0]["asr"] < bias["asr"]  # the backdoor answers its own corner only


def test_group_poison_keeps_labels_and_stamp_is_class_uniform(run_tool, digits):
    poisoned = run_tool("plant-backdoor", "poison", "train.jsonl", "--group-classes", "0-1", "--rate", "0.5",
                        "--trigger", "blend", "--alpha", "0.3", cwd=digits)
    assert poisoned.returncode == 0, poisoned.stderr
    rows = poisoned.records
    group = [r for r in rows if r["label"] in (0, 1)]
    assert sum(r["poisoned"] for r in rows) == round(0.5 * len(group))
    assert all(r["label"] in (0, 1) and "orig_label" not in r for r in rows if r["poisoned"])
    again = run_tool("plant-backdoor", "poison", "train.jsonl", "--group-classes", "0-1", "--rate", "0.5",
                     "--trigger", "blend", "--alpha", "0.3", cwd=digits)
    assert again.stdout == poisoned.stdout
    stamped = run_tool("plant-backdoor", "stamp", "test.jsonl", "--rate", "0.5", "--uniform", cwd=digits).records
    for label in range(10):
        members = [r for r in stamped if r["label"] == label]
        assert sum(r["stamped"] for r in members) == round(0.5 * len(members))


def test_trigger_file_matches_the_inline_spec(run_tool, digits):
    made = run_tool("plant-backdoor", "trigger", "--trigger", "square", "--size", "5", "--pos", "3,4",
                    "--color", "0,1,0", "--shape", "3,32,32", "--out", "t.safetensors", cwd=digits)
    assert made.returncode == 0, made.stderr
    tensors = load_file(digits / "t.safetensors")
    assert int(tensors["mask"].sum()) == 25 and tensors["mask"][0, 4, 3] == 1
    stamped = run_tool("plant-backdoor", "stamp", "test.jsonl", "--trigger-file", "t.safetensors", cwd=digits)
    first = stamped.records[0]
    from confidently.data.triggers import stamp_rows

    image = load_image(first["image"], digits)
    via_file = stamp_rows(image[None], [first["trigger"]])[0]
    inline = stamp_rows(image[None], [{"type": "square", "size": 5, "pos": "3,4", "color": [0, 1, 0]}])[0]
    assert torch.equal(via_file, inline)


@pytest.mark.parametrize("args, code, message", [
    (("poison", "train.jsonl", "--group-classes", "0", "--rate", "1.5"), 2, "rate"),
    (("poison", "train.jsonl", "--group-classes", "12"), 2, "outside"),
    (("poison", "train.jsonl", "--mode", "relabel", "--target-label", "10"), 2, "target-label"),
    (("stamp", "test.jsonl", "--size", "40"), 3, "does not fit"),
    (("stamp", "test.jsonl", "--trigger", "hat"), 2, "square"),
])
def test_bad_input(run_in_process, digits, args, code, message):
    result = run_in_process("plant-backdoor", *args, cwd=digits)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_a_model_for_another_task_is_refused(run_tool, digits, tmp_path):
    from confidently.models import create_model, save_model

    save_model(create_model("small_cnn", 5, img_size=32), tmp_path / "five.safetensors")
    result = run_tool("plant-backdoor", "asr", "--data", "test.jsonl", "--model", tmp_path / "five.safetensors",
                      cwd=digits)
    assert result.returncode == 3 and "5 classes" in result.stderr


def test_experiment_grid_and_summarize(run_tool, digits):
    grid = run_tool("plant-backdoor", "experiment", "--source", "demo:digits?size=8", "--source-split", "train",
                    "--source-test-split", "test", "--source-classes", "0-4", "--target", "demo:digits?size=8",
                    "--target-split", "train", "--target-test-split", "test", "--target-classes", "5-9",
                    "--size", "2", "--color", "1,1,1", "--rates", "0,0.1", "--modes", "fixed,scratch",
                    "--seeds", "0-1", "--epochs-source", "3", "--epochs-target", "2", "--summary", "grid.json",
                    cwd=digits)
    assert grid.returncode == 0, grid.stderr
    runs = grid.records
    assert len(runs) == 2 * 2 * 2
    assert all(r["kind"] == "run" and r["target_clean_acc"] > 0.3 for r in runs)  # chance is 0.2
    again = run_tool("plant-backdoor", "summarize", input=grid.stdout, cwd=digits)
    assert json.loads(again.stdout) == json.loads((digits / "grid.json").read_text())
    bad = run_tool("plant-backdoor", "experiment", "--source", "demo:digits?size=8", "--target", "demo:digits?size=8",
                   "--source-classes", "0-12", cwd=digits)
    assert bad.returncode == 2 and "outside" in bad.stderr


def test_materialised_pixels_equal_deferred_ones(run_tool, digits):
    from confidently.data import open_dataset

    common = ("train.jsonl", "--mode", "relabel", "--target-label", "3", "--rate", "0.05", "--size", "6",
              "--pos", "br")
    deferred = run_tool("plant-backdoor", "poison", *common, cwd=digits)
    shard = run_tool("plant-backdoor", "poison", *common, "--materialize", "m.safetensors", cwd=digits)
    assert deferred.returncode == 0 and shard.returncode == 0, shard.stderr
    (digits / "deferred.jsonl").write_text(deferred.stdout)
    (digits / "shard.jsonl").write_text(shard.stdout)
    assert all(r["trigger"] is None for r in shard.records)
    assert [r["materialized_trigger"] for r in shard.records] == [r["trigger"] for r in deferred.records]
    a, labels_a = collect(open_dataset(str(digits / "deferred.jsonl")))
    b, labels_b = collect(open_dataset(str(digits / "shard.jsonl")))
    assert torch.equal(labels_a, labels_b) and torch.equal(a, b)
    relabelled = next(r for r in shard.records if r["poisoned"])
    assert relabelled["class_name"] is None and relabelled["orig_class_name"] == str(relabelled["orig_label"])


def test_subset_draws_exact_cells_and_respects_exclusions(run_tool, digits):
    cells = ("--cell", "label=1:30", "--cell", "label=2,split=train:20")
    first = run_tool("plant-backdoor", "subset", "train.jsonl", *cells, cwd=digits)
    assert first.returncode == 0, first.stderr
    rows = first.records
    assert sum(r["label"] == 1 for r in rows) == 30 and sum(r["label"] == 2 for r in rows) == 20
    assert all(r["cell"] in ("label=1:30", "label=2,split=train:20") for r in rows)
    (digits / "first.jsonl").write_text(first.stdout)
    second = run_tool("plant-backdoor", "subset", "train.jsonl", "--cell", "label=1:30", "--exclude", "first.jsonl",
                      cwd=digits)
    assert not {r["id"] for r in second.records} & {r["id"] for r in rows}
    too_many = run_tool("plant-backdoor", "subset", "train.jsonl", "--cell", "label=1:100000", cwd=digits)
    assert too_many.returncode == 3 and "only" in too_many.stderr


def test_probe_finds_the_feature_a_model_learned(run_tool, backdoored):
    """The backdoored model piles the overlaid images onto class 0; the same model on a corner it never saw,
    or with no overlay at all, does not."""
    result = run_tool("plant-backdoor", "probe", "--data", "test.jsonl", "--model", "bd=bd.safetensors",
                      "--size", "8", cwd=backdoored)
    other_corner = run_tool("plant-backdoor", "probe", "--data", "test.jsonl", "--model", "bd=bd.safetensors",
                            "--size", "8", "--pos", "br", cwd=backdoored)
    assert result.returncode == other_corner.returncode == 0, result.stderr + other_corner.stderr
    (record,), (control,) = result.records, other_corner.records
    assert record["name"] == "bd" and record["hist_clean"] == control["hist_clean"]
    assert max(record["hist_clean"]) < 0.2 * record["n"]  # clean predictions spread over the ten digits
    assert record["top_class"] == 0 and record["top_share"] > 0.7 and record["changed"] > 0.6
    assert record["tv_to_clean"] > 0.6 and record["kl_to_uniform"] > control["kl_to_uniform"] + 0.5
    assert control["tv_to_clean"] < record["tv_to_clean"] - 0.3


def test_asr_reports_group_gaps_from_a_record_attribute(run_tool, digits, tmp_path):
    from confidently.models import create_model, save_model

    rows = [json.loads(line) for line in (digits / "test.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["attrs"] = {"striped": i % 2}
    (digits / "attrs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    save_model(create_model("small_cnn", 10, img_size=32), tmp_path / "m.safetensors")
    result = run_tool("plant-backdoor", "asr", "--data", "attrs.jsonl", "--model", tmp_path / "m.safetensors",
                      "--group-attr", "striped", cwd=digits)
    assert result.returncode == 0, result.stderr
    group = result.records[0]["group"]
    assert group["attr"] == "striped" and group["n_with"] + group["n_without"] == len(rows)
    assert len(group["acc_gap_per_class"]) == 10 and len(group["pred_gap"]) == 10
    bad = run_tool("plant-backdoor", "asr", "--data", "test.jsonl", "--model", tmp_path / "m.safetensors",
                   "--group-attr", "striped", cwd=digits)
    assert bad.returncode == 3 and "striped" in bad.stderr


def test_asr_shards_merge_into_the_unsharded_record(run_tool, digits, tmp_path):
    from confidently.models import create_model, save_model

    rows = [json.loads(line) for line in (digits / "test.jsonl").read_text().splitlines()]
    (tmp_path / "attrs.jsonl").write_text("".join(json.dumps({**row, "image": str(digits / row["image"]),
                                                              "attrs": {"striped": i % 3 == 0}}) + "\n"
                                                  for i, row in enumerate(rows)))
    save_model(create_model("small_cnn", 10, img_size=32), tmp_path / "m.safetensors")
    args = ["asr", "--data", "attrs.jsonl", "--model", "m.safetensors", "--size", "8", "--target-label", "0",
            "--exclude-classes", "1", "--group-attr", "striped"]
    whole = run_tool("plant-backdoor", *args, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    for i in range(2):
        part = run_tool("plant-backdoor", *args, "--shard", f"{i}/2", cwd=tmp_path)
        assert part.returncode == 0, part.stderr
        assert part.records[0]["shard"] == f"{i}/2" and part.records[0]["n"] < whole.records[0]["n"]
        (tmp_path / f"asr-{i}.jsonl").write_text(part.stdout)
    merged = run_tool("plant-backdoor", "asr-merge", "asr-0.jsonl", "asr-1.jsonl", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert merged.records == whole.records
    assert whole.records[0]["group"]["n_with"] == sum(i % 3 == 0 for i in range(len(rows)))
    mixed = run_tool("plant-backdoor", "asr-merge", "asr-0.jsonl", cwd=tmp_path)
    assert mixed.returncode == 3 and "1/2 missing" in mixed.stderr


def test_materialising_photos_of_mixed_sizes_fits_them_to_one(run_tool, tmp_path):
    """poison --materialize needs one size (--img-size gives it); asr streams the folder into a timm model at 224."""
    from confidently.models import create_model, save_model
    from safetensors.torch import load_file

    from tests.photos import make_imagenet_folder

    make_imagenet_folder(tmp_path / "photos", train_per_class=2, val_per_class=0, special=False)
    export = run_tool("dataset", "export", tmp_path / "photos", "--split", "train", "--out", tmp_path / "out", "-q")
    assert export.returncode == 0, export.stderr
    (tmp_path / "train.jsonl").write_text(export.stdout)
    args = ("poison", "train.jsonl", "--mode", "relabel", "--target-label", "0", "--rate", "0.5", "--size", "4",
            "--materialize", "m.safetensors")
    mixed = run_tool("plant-backdoor", *args, cwd=tmp_path)
    assert mixed.returncode == 3 and "--img-size" in mixed.stderr and not (tmp_path / "m.safetensors").exists()
    fitted = run_tool("plant-backdoor", *args, "--img-size", "24", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    assert load_file(tmp_path / "m.safetensors")["images"].shape == (6, 3, 24, 24)
    assert any(r["poisoned"] for r in fitted.records) and len(fitted.records) == 6
    torch.manual_seed(0)
    save_model(create_model("resnet18", 3, img_size=224), tmp_path / "resnet18.safetensors")
    asr = run_tool("plant-backdoor", "asr", "--data", tmp_path / "photos", "--split", "train", "--model",
                   tmp_path / "resnet18.safetensors", "--size", "32", "--workers", "2")
    assert asr.returncode == 0, asr.stderr
    assert asr.records[0]["n"] == 6 and asr.records[0]["tallies"]


@pytest.mark.slow
def test_experiment_under_torchrun_trains_data_parallel_and_prints_one_set_of_records(run_tool, digits):
    """Two gloo ranks: every training is data-parallel and the test splits are scored half by each rank with
    the counts summed; rank 0 alone prints the records and writes --summary. The grid, the poisoning and the
    test-set sizes are a single process's; the accuracies are not bit-equal to it because small_cnn's batch
    norm normalises each rank's half batch on its own (DDP on a model without batch norm gives the
    single-process update: tests/test_training.py)."""
    import subprocess
    import sys

    from tests.conftest import real_tool_path

    args = ["experiment", "--source", "demo:digits?size=8", "--source-split", "train", "--source-test-split", "test",
            "--source-classes", "0-4", "--target", "demo:digits?size=8", "--target-split", "train",
            "--target-test-split", "test", "--target-classes", "5-9", "--size", "2", "--color", "1,1,1", "--rates",
            "0,0.1", "--modes", "fixed", "--seeds", "0", "--epochs-source", "2", "--epochs-target", "1"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                real_tool_path("plant-backdoor")]
    ranks = subprocess.run([*torchrun, *args, "--summary", "ddp.json"], cwd=digits, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    runs = [json.loads(line) for line in ranks.stdout.splitlines()]
    one = run_tool("plant-backdoor", *args, cwd=digits)
    assert one.returncode == 0, one.stderr
    assert ranks.stderr.count("bias transfer (mean") == 1  # one summary table
    summary = json.loads((digits / "ddp.json").read_text())
    assert summary["runs"] == len(runs) == len(one.records) == 2

    def cell(run):
        return {k: v for k, v in run.items() if not k.endswith(("_acc", "asr", "asr_targeted", "time_s", "shift"))}

    assert [cell(r) for r in runs] == [cell(r) for r in one.records]
    assert all(run["source_clean_acc"] > 0.3 and run["target_clean_acc"] > 0.3 for run in runs)  # chance: 0.2
