"""`certify` as a user runs it: fit → export | run → summarize, shards, geometry, gates, bad input."""

import json
import os
import subprocess

import pytest
import torch
from confidently.io.images import save_image
from confidently.schema import schema_errors

from tests.conftest import tool_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny ResNet fitted on column ablations (b = 8) and 40 exported test digits."""
    root = tmp_path_factory.mktemp("certify")
    fit = subprocess.run([tool_path("certify"), "fit", "--data", "demo:digits", "--split", "train", "--arch",
                          "tiny_resnet", "--pretrain-epochs", "3", "--epochs", "3", "--ablation-size", "8", "--out",
                          "base.safetensors"], cwd=root, capture_output=True, text=True, env=ENV, timeout=600)
    assert fit.returncode == 0, fit.stderr
    stages = [json.loads(line)["stage"] for line in fit.stdout.splitlines()]
    assert stages == ["full"] * 3 + ["ablation"] * 3
    export = subprocess.run([tool_path("dataset"), "export", "demo:digits", "--split", "test", "--limit", "40",
                             "--out", "digits"], cwd=root, capture_output=True, text=True, env=ENV, timeout=300)
    (root / "test.jsonl").write_text(export.stdout)
    return root


def certify(workdir, *args, input=None):
    return subprocess.run([tool_path("certify"), *args], cwd=workdir, capture_output=True, text=True, env=ENV,
                          input=input if input is not None else "", timeout=600)


def records(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_run_records_and_summary(workdir):
    proc = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--patch-sizes", "1,2,3",
                   "--summary", "summary.json")
    assert proc.returncode == 0, proc.stderr
    rows = records(proc)
    source = [json.loads(line) for line in (workdir / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    for row in rows:
        assert schema_errors(row, "image-record") == []
        result = row["certify"]
        assert result["ablation"] == {"type": "column", "size": 8, "stride": 1, "n": 32, "null": "zero",
                                      "drop_tokens": False}
        assert result["vote"]["total"] == 32 and result["delta"] == {"1": 8, "2": 9, "3": 10}
        certified = [result["certified"][m] for m in ("1", "2", "3")]
        assert certified == sorted(certified, reverse=True)  # a certificate at m holds for smaller patches
        assert result["certified"]["1"] == (result["gap"] > 16)
    summary = json.loads((workdir / "summary.json").read_text())
    accuracies = [summary["certified_acc"][m] for m in ("1", "2", "3")]
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[0] <= summary["clean_acc"]
    assert summary["base_acc"] is not None and summary["clean_acc"] > 0.3
    again = certify(workdir, "summarize", "-", input=proc.stdout)
    recomputed = json.loads(again.stdout)
    assert {k: v for k, v in summary.items() if k not in ("config", "model")} == recomputed


def test_shards_reassemble_the_full_run(workdir):
    full = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "-q").stdout.splitlines()
    parts = [certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--shard", f"{i}/3", "-q")
             for i in range(3)]
    merged = [line for part in parts for line in part.stdout.splitlines()]
    assert sorted(merged, key=full.index) == full and len(merged) == len(full)


def test_loading_threads_do_not_change_the_output(workdir):
    lines = (workdir / "test.jsonl").read_text().splitlines()
    gone = '{"id":"gone","image":"nowhere.png"}'  # a bad record among the good ones
    (workdir / "gap.jsonl").write_text("\n".join([*lines[:5], gone, *lines[5:]]) + "\n")
    inline, threaded = (certify(workdir, "run", "gap.jsonl", "--model", "base.safetensors", "--skip-invalid",
                                "--workers", workers, "-q") for workers in ("0", "2"))
    assert inline.returncode == threaded.returncode == 0, inline.stderr + threaded.stderr
    assert len(inline.stdout.splitlines()) == 41 and "error" in records(inline)[5]
    assert threaded.stdout == inline.stdout


def test_delta_geometry(workdir):
    proc = certify(workdir, "delta", "--height", "224", "--width", "224", "--ablation-size", "19", "--stride", "10",
                   "--patch-sizes", "23,32")
    rows = {r["m"]: r for r in records(proc)}
    assert rows[32]["delta"] == 6 and rows[32]["delta_closed_form"] == 5 and rows[23]["delta"] == 5
    assert "unsound" in proc.stderr


def test_fail_under_gate_exits_4(workdir):
    proc = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--patch-sizes", "1",
                   "--fail-under", "1=1.01")
    assert proc.returncode == 4 and "under the gate" in proc.stderr
    assert len(proc.stdout.splitlines()) == 40  # the records were written before the gate


def test_other_sizes_are_fitted_and_bad_images_name_line_and_field(workdir):
    """A 16×40 photo is resized and centre-cropped to the model's 32×32; an unreadable one stops the run."""
    save_image(torch.rand(3, 16, 40), workdir / "small.png")
    (workdir / "broken.png").write_bytes(b"not a png")
    lines = (workdir / "test.jsonl").read_text().splitlines()[:2]
    (workdir / "sizes.jsonl").write_text("\n".join(lines + ['{"id":"small","image":"small.png"}']) + "\n")
    fitted = certify(workdir, "run", "sizes.jsonl", "--model", "base.safetensors")
    assert fitted.returncode == 0 and records(fitted)[2]["id"] == "small", fitted.stderr
    (workdir / "bad.jsonl").write_text("\n".join(lines + ['{"id":"broken","image":"broken.png"}']) + "\n")
    proc = certify(workdir, "run", "bad.jsonl", "--model", "base.safetensors")
    assert proc.returncode == 3 and "bad.jsonl:3, field 'image'" in proc.stderr and "broken.png" in proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    skipped = certify(workdir, "run", "bad.jsonl", "--model", "base.safetensors", "--skip-invalid")
    assert skipped.returncode == 0 and "error" in records(skipped)[2]


@pytest.mark.parametrize(("args", "words"), [
    (["--ablation", "diagonal"], "unknown ablation"), (["--tie", "loose"], "--tie"),
    (["--drop-tokens", "on"], "needs a ViT"), (["--patch-sizes", "0"], "must be >= 1"),
])
def test_usage_errors(workdir, run_in_process, args, words):
    proc = run_in_process("certify", "run", "test.jsonl", "--model", "base.safetensors", *args, cwd=workdir)
    assert proc.returncode == 2 and words in proc.stderr


def certify_fields(proc):
    return [record["certify"] for record in records(proc)]


def test_recertify_equals_run_for_ablation_shards_and_strides(workdir):
    full = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--votes-out", "v.safetensors", "-q")
    assert full.returncode == 0, full.stderr
    assert certify_fields(certify(workdir, "recertify", "--votes", "v.safetensors", "-q")) == certify_fields(full)
    for j in range(3):
        part = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--ablation-shard", f"{j}/3",
                       "--votes-out", f"v{j}.safetensors", "-q")
        assert part.returncode == 0, part.stderr
    merged = certify(workdir, "recertify", "--votes", "v0.safetensors,v1.safetensors,v2.safetensors", "-q")
    assert certify_fields(merged) == certify_fields(full)
    missing = certify(workdir, "recertify", "--votes", "v0.safetensors,v1.safetensors")
    assert missing.returncode == 3 and "pass every ablation shard" in missing.stderr
    strided = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--stride", "4", "-q")
    restrided = certify(workdir, "recertify", "--votes", "v.safetensors", "--stride", "4", "-q")
    assert certify_fields(restrided) == certify_fields(strided)
    assert certify_fields(strided)[0]["ablation"]["n"] == 8


def test_threshold_votes(workdir):
    proc = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--vote", "threshold", "--theta",
                   "0.6", "-q")
    assert proc.returncode == 0, proc.stderr
    for result in certify_fields(proc):
        assert result["vote"] == {"rule": "threshold", "theta": 0.6, "total": result["vote"]["total"]}
        assert result["vote"]["total"] <= 32  # θ > 0.5: at most one vote per ablation


@pytest.mark.parametrize(("args", "words"), [
    (["--patch-sizes", "32"], "not smaller than the image"), (["--ablation-size", "40"], "larger than the image"),
    (["--stride", "9"], "larger than the ablation size"),
    (["--ablation", "block", "--ablation-size", "1", "--stride", "1"], None),
    (["--ablation-shard", "0/2"], "needs --votes-out"),
])
def test_bad_geometry(workdir, args, words):
    proc = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", *args, "-q")
    if words is None:  # 1,024 block ablations are fine; the huge-count guard is tested in the library
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2 and words in proc.stderr


def test_check_attacks_certified_images(workdir):
    proc = certify(workdir, "check", "test.jsonl", "--model", "base.safetensors", "--patch-size", "1",
                   "--positions", "6", "--contents", "zeros,ones,noise")
    assert proc.returncode == 0, proc.stderr
    reports = [r["certify"]["check"] for r in records(proc)]
    run = certify(workdir, "run", "test.jsonl", "--model", "base.safetensors", "--patch-sizes", "1", "-q")
    assert run.returncode == 0, run.stderr
    # check attacks exactly the images `run` certifies, and predicts what `run` predicts
    expected = [(r["certified"]["1"], r["pred"]) for r in certify_fields(run)]
    assert [(r["certified"], r["pred"]) for r in reports] == expected
    checked = [r for r in reports if r["certified"]]
    assert checked  # exit 0 means at least one certified image was attacked
    for report in checked:
        assert report["placements"] == 6 and report["contents"] == ["noise", "ones", "zeros"]
        assert report["flips"] == [] and report["flipped"] is False
    assert all(set(r) == {"patch", "certified", "pred"} for r in reports if not r["certified"])


def test_default_band_follows_the_image_size_for_models_certify_did_not_fit():
    """An imported 224² model gets the thesis's b = 19, not a b of 4 that sees almost nothing."""
    from confidently.errors import UsageError
    from confidently.models import create_model
    from confidently.smoothing import model_geometry

    imported = create_model("tiny_resnet", 3, img_size=224)
    assert model_geometry(imported, None, None, 1).size == 19
    assert model_geometry(create_model("tiny_resnet", 3, img_size=32), "row", None, 1).size == 4  # CIFAR's b
    assert model_geometry(create_model("tiny_resnet", 3, img_size=64), None, None, 1).size == 5  # 19/224 of 64
    assert model_geometry(imported, None, 7, 1).size == 7
    with pytest.raises(UsageError, match="--ablation-size"):
        model_geometry(imported, "block", None, 1)
    imported.training_info = {"ablation": {"kind": "column", "size": 37}}  # what `certify fit` stores
    assert model_geometry(imported, None, None, 1).size == 37


def test_patch_fractions_give_the_thesis_sizes():
    from confidently.errors import UsageError
    from confidently_tools.certify import fraction_sizes

    assert fraction_sizes("0.01,0.02,0.03", 224, 224) == [23, 32, 39]
    for bad in ("0", "1.5", ","):
        with pytest.raises(UsageError, match="--patch-frac"):
            fraction_sizes(bad, 224, 224)


def test_run_keeps_votes_only_for_votes_out(tmp_path):
    """Without --votes-out no image's votes outlive its batch (50k images × 224 ablations add up)."""
    from confidently.io.records import RecordReader
    from confidently.models import create_model
    from confidently.smoothing import Ablation, Certificates, Certifier

    save_image(torch.rand(3, 8, 8), tmp_path / "a.png")
    (tmp_path / "r.jsonl").write_text('{"id":"a","image":"a.png"}\n{"id":"b","image":"a.png"}\n')
    records = list(RecordReader(tmp_path / "r.jsonl", require_image=True))
    model = create_model("small_cnn", 3).eval()
    certificates = Certificates(Ablation("column", 2), 8, 8, 3, [1], "strict", True,
                                {"rule": "argmax", "theta": None}, False, 0)
    streaming = Certifier(model, certificates, 16, None)
    loaded = [streaming.load_record(record) for record in records]
    assert [r["certify"]["vote"]["total"] for r in streaming(records, loaded)] == [8, 8] and streaming.collected == []
    keeping = Certifier(model, certificates, 16, None, keep_votes=True)
    keeping(records, loaded)
    assert [row[0] for row in keeping.collected] == ["a", "b"]


def test_a_timm_vit_at_224_certifies_a_folder_of_mixed_size_photos(tmp_path):
    """vit_tiny_patch16_224 (random weights) at its own size: photos of any size are fitted to 224 through a
    real pipe, and a wider stride keeps the ablations few."""
    from confidently.models import create_model, save_model

    from tests.photos import make_imagenet_folder

    make_imagenet_folder(tmp_path / "photos", train_per_class=0, val_per_class=1)
    torch.manual_seed(0)
    save_model(create_model("vit_tiny_patch16_224", 3, img_size=224), tmp_path / "vit.safetensors")
    proc = subprocess.run(f"{tool_path('dataset')} export photos --split val --out photos-out -q | "
                          f"{tool_path('certify')} run - --model vit.safetensors --stride 16 --patch-sizes 16 "
                          "--workers 2 -q", shell=True, cwd=tmp_path, capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = records(proc)
    assert len(rows) == 7 and all("error" not in r for r in rows)
    assert {r["certify"]["vote"]["total"] for r in rows} == {224 // 16}
    assert {(r["certify"]["ablation"]["size"], r["certify"]["ablation"]["drop_tokens"]) for r in rows} == {(19, True)}


def test_fit_trains_a_timm_vit_at_224_on_a_photo_folder(tmp_path):
    """certify fit at ImageNet size with DeiT's recipe: mixed-size photos fitted by the recipe's crops, the
    truncated JPEG reported once with --skip-invalid; the model certifies at the thesis's band for 224."""
    from confidently.models import load_model

    from tests.photos import make_imagenet_folder

    make_imagenet_folder(tmp_path / "photos", train_per_class=0, val_per_class=1, truncated=True)
    proc = subprocess.run([tool_path("certify"), "fit", "--data", "photos", "--split", "val", "--arch",
                           "vit_tiny_patch16_224", "--img-size", "224", "--pretrain-epochs", "0", "--epochs", "2",
                           "--augment", "deit", "--ablation-size", "19", "--batch-size", "4", "--workers", "0",
                           "--skip-invalid", "--out", "vit.safetensors"], cwd=tmp_path, capture_output=True,
                          text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = records(proc)
    assert [r.get("epoch") for r in rows] == [None, 1, 2] and "truncated.JPEG" in rows[0]["error"]
    assert {r.get("stage") for r in rows[1:]} == {"ablation"}
    model = load_model(tmp_path / "vit.safetensors")
    info = model.training_info
    assert model.input_size == (3, 224, 224) and info["ablation"] == {"kind": "column", "size": 19}
    assert info["drop_tokens"] is True and info["config"]["mixup"] == 0.8 and info["tool"] == "certify"
    assert not list(tmp_path.glob("*.ckpt"))
