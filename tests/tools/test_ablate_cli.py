"""`ablate` as a user runs it: export → order → curve | summarize, shards, seeds, token dropping, LIME → top-k,
apply | certify, ROAR fitting, bad input."""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.images import load_image
from confidently.io.model_files import read_model_file
from confidently.models import load_model
from confidently.schema import schema_errors
from safetensors.torch import load_file, save_file

from tests.conftest import BIN, ROOT, tool_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}
DATA = "demo:digits?background=noisy"
N = 12  # exported test digits
GRID = ("--patch-size", "4")  # 32×32 images: 8×8 = 64 features, one per ViT token
F = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """12 exported noisy test digits, a tiny ResNet (2 epochs) and a tiny ViT (1 epoch), trained while exporting."""
    from confidently.data import open_dataset
    from confidently.models import create_model, save_model
    from confidently.training import TrainConfig, train_classifier

    root = tmp_path_factory.mktemp("ablate")
    export = subprocess.Popen([tool_path("dataset"), "export", DATA, "--split", "test", "--limit", str(N), "--out",
                               "digits"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    train = open_dataset(DATA, "train")
    images, labels = collect(train)
    for arch, name, epochs in (("tiny_resnet", "rn", 2), ("tiny_vit", "vit", 1)):
        torch.manual_seed(0)
        model = create_model(arch, 10, img_size=32, classes=train.classes)
        trained = train_classifier(model, ImageDataset.from_tensors(images, labels),
                                   TrainConfig(epochs=epochs, lr=3e-3, shift=2))
        save_model(trained, root / f"{name}.safetensors")
    out, err = export.communicate(timeout=300)
    assert export.returncode == 0, err
    (root / "test.jsonl").write_text(out)
    assert len(out.splitlines()) == N
    return root


def ablate(workdir, *args, input=None):
    return subprocess.run([tool_path("ablate"), *map(str, args)], cwd=workdir, capture_output=True, text=True,
                          env=ENV, input=input if input is not None else "", timeout=600)


def shell(workdir, command):
    """One shell pipeline (bash, pipefail) with the installed tools on PATH."""
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=workdir, capture_output=True, text=True,
                          env=ENV, timeout=600)


def side_by_side(workdir, *commands):
    """Independent commands at once (two cores): a string is a shell pipeline, a tuple the arguments of `ablate`."""
    def run(command):
        return shell(workdir, command) if isinstance(command, str) else ablate(workdir, *command)

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(run, commands))


def records(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


def results(proc):
    return [record["ablate"] for record in records(proc)]


def source_ids(workdir):
    return [json.loads(line)["id"] for line in (workdir / "test.jsonl").read_text().splitlines()]


def rounded(value):
    """``value`` with every float rounded to 9 places (sums over records in another order differ in the last bit)."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return [rounded(v) for v in value] if isinstance(value, list) else value


def is_permutation(row, count=F):
    return sorted(row.tolist()) == list(range(count))


@pytest.fixture(scope="module")
def saliency_curve(workdir):
    """`ablate order` (saliency of the ResNet) once, then `ablate curve --summary | tee | ablate summarize`."""
    order = ablate(workdir, "order", "test.jsonl", "--ref-model", "rn.safetensors", "--order", "saliency", *GRID,
                   "--out", "o.safetensors", "-q")
    assert order.returncode == 0, order.stderr
    curve = shell(workdir, "ablate curve test.jsonl --model rn.safetensors --fill black --orders o.safetensors "
                           "--patch-size 4 --step 8 --summary s.json -q | tee curve.jsonl | ablate summarize -")
    assert curve.returncode == 0, curve.stderr
    return order, (workdir / "curve.jsonl").read_text(), json.loads(curve.stdout)


def test_saliency_orders_are_stored_once(workdir, saliency_curve):
    order, _, _ = saliency_curve
    ids = source_ids(workdir)
    assert [r["id"] for r in records(order)] == ids
    tensors, meta = load_artifact(workdir / "o.safetensors")
    assert schema_errors(meta, "artifact-metadata") == []
    assert meta["ids"] == ids and meta["order"] == "saliency" and meta["patch_size"] == 4
    orders, scores = tensors["orders"], tensors["scores"]
    assert orders.dtype == torch.int32 and tuple(orders.shape) == (N, F) and tensors["counts"].tolist() == [F] * N
    for row, score, result in zip(orders, scores, results(order), strict=True):
        assert is_permutation(row)
        ranked = score[row.long()]
        assert torch.all(ranked[:-1] >= ranked[1:])  # the most salient feature goes first
        assert result["schema"] == "ablate-order/v1" and result["first"] == row[:10].tolist()


def test_curve_records_and_summary(workdir, saliency_curve):
    _, curve_text, _ = saliency_curve
    rows = [json.loads(line) for line in curve_text.splitlines()]
    assert [r["id"] for r in rows] == source_ids(workdir)
    for row in rows:
        assert schema_errors(row, "image-record") == []
        result = row["ablate"]
        assert result["schema"] == "ablate-curve/v1" and result["order"] == "saliency" and result["features"] == F
        assert result["ks"] == list(range(0, F + 1, 8))
        assert result["pred"][0] == result["pred0"]  # U_0 = 1: the k = 0 row, run through the fill, is the clean image
        assert all(0.0 <= p <= 1.0 for p in result["p_orig"])
        flips = [k for k, p in zip(result["ks"], result["pred"], strict=True) if p != result["pred0"]]
        assert result["first_flip_k"] == (flips[0] if flips else None)
    summary = json.loads((workdir / "s.json").read_text())
    assert summary["n"] == N and summary["ks"] == rows[0]["ablate"]["ks"]
    assert summary["frac_unchanged"][0] == 1.0
    expected = [sum(r["ablate"]["pred"][j] == r["ablate"]["pred0"] for r in rows) / N for j in range(9)]
    assert summary["frac_unchanged"] == pytest.approx(expected)
    assert all(0.0 <= h <= 1.0 + 1e-9 for h in summary["class_entropy_norm"])
    assert all(0.0 <= p <= 1.0 for p in summary["p_orig_mean"]) and 0.0 <= summary["auc_unchanged"] <= 1.0


def test_shards_summarize_like_one_run(workdir, saliency_curve):
    _, curve_text, unsharded = saliency_curve
    common = "--model rn.safetensors --fill black --orders o.safetensors --patch-size 4 --step 8 -q"
    proc = shell(workdir, f"cat <(ablate curve test.jsonl {common} --shard 0/2) <(ablate curve test.jsonl {common} "
                          "--shard 1/2) | tee shards.jsonl | ablate summarize -")
    assert proc.returncode == 0, proc.stderr
    full = curve_text.splitlines()
    merged = (workdir / "shards.jsonl").read_text().splitlines()
    assert len(merged) == len(full) and sorted(merged, key=full.index) == full
    sharded = json.loads(proc.stdout)
    assert sharded["n"] == N and sharded["ks"] == unsharded["ks"]
    assert sharded["frac_unchanged"] == pytest.approx(unsharded["frac_unchanged"])
    assert sharded["class_entropy_nats"] == pytest.approx(unsharded["class_entropy_nats"])


def test_same_seed_same_bytes_whatever_the_batch(workdir):
    args = ("curve", "test.jsonl", "--model", "rn.safetensors", "--order", "random", "--fill", "random-noise", *GRID,
            "--step", "8", "-q")
    first, second, small = side_by_side(workdir, args, args, (*args, "--batch-size", "3"))
    assert first.returncode == second.returncode == small.returncode == 0, first.stderr + small.stderr
    assert len(first.stdout.splitlines()) == N
    assert first.stdout == second.stdout
    assert records(small) == records(first)
    assert all(r["fill"] == "random-noise" and r["order"] == "random" for r in results(first))


def test_loading_threads_do_not_change_the_output(workdir):
    lines = (workdir / "test.jsonl").read_text().splitlines()
    gone = '{"id":"gone","image":"nowhere.png"}'  # a bad record among the good ones
    (workdir / "gap.jsonl").write_text("\n".join([*lines[:4], gone, *lines[4:]]) + "\n")
    args = ("curve", "gap.jsonl", "--model", "rn.safetensors", "--order", "random", "--fill", "random-noise", *GRID,
            "--step", "8", "--batch-size", "5", "--skip-invalid", "-q")
    inline, threaded = side_by_side(workdir, (*args, "--workers", "0"), (*args, "--workers", "2"))
    assert inline.returncode == threaded.returncode == 0, inline.stderr + threaded.stderr
    assert len(inline.stdout.splitlines()) == N + 1 and "error" in records(inline)[4]
    assert threaded.stdout == inline.stdout


def test_vit_token_dropping(workdir):
    # 2×2 features inside the ViT's 4×4 tokens: a token can be partly removed, so the partial rule decides
    # whether the paint under a removed region reaches the model
    paints = ("--colors", "black;color:1,1,1;random-noise", "--samples", "50", "--k", "2,4", "--patch-size", "2")
    drop_curve, drop_consistency, keep_consistency, colours = side_by_side(
        workdir,
        ("curve", "test.jsonl", "--model", "vit.safetensors", "--fill", "drop", *GRID, "--step", "16", "-q"),
        ("consistency", "test.jsonl", "--model", "vit.safetensors", "--fill", "drop", *paints, "-q"),
        ("consistency", "test.jsonl", "--model", "vit.safetensors", "--fill", "drop", "--partial", "keep", *paints,
         "-q"),
        ("consistency", "test.jsonl", "--model", "rn.safetensors", "--colors", "binary8", "--samples", "50", "--k",
         "2,4,16", *GRID, "--summary", "consistency.json", "-q"))
    for proc in (drop_curve, drop_consistency, keep_consistency, colours):
        assert proc.returncode == 0, proc.stderr
        assert [r["id"] for r in records(proc)] == source_ids(workdir)
    for result in results(drop_curve):
        assert result["schema"] == "ablate-curve/v1" and result["fill"] == "drop" and result["partial"] == "drop"
        assert result["true_removal"] and result["ks"] == [0, 16, 32, 48, 64] and result["pred"][0] == result["pred0"]
    for result in results(drop_consistency):  # a dropped token hides its paint: the rankings agree exactly
        assert result["fills"] == ["drop/black", "drop/color:1,1,1", "drop/random-noise"] and result["pairs"] == 3
        assert result["ks"] == [2, 4] and result["jaccard"] == [[1.0, 1.0]] * 3
    kept = [j for result in results(keep_consistency) for pair in result["jaccard"] for j in pair]
    assert min(kept) < 1.0  # partly removed tokens are kept and show the paint, so the colour moves the ranking
    for result in results(colours):
        assert result["pairs"] == 28 and len(result["jaccard"]) == 28
        assert len(result["fills"]) == 8 and result["ks"] == [2, 4, 16]
        assert all(len(pair) == 3 and all(0.0 <= j <= 1.0 for j in pair) for pair in result["jaccard"])
        means = torch.tensor(result["jaccard"]).mean(0).tolist()
        assert result["jaccard_mean"] == pytest.approx(means)
    summary = json.loads((workdir / "consistency.json").read_text())
    assert summary["n"] == N and summary["pairs"] == 28
    assert all(0.0 <= j <= 1.0 for j in summary["jaccard_mean"] + summary["random_reference"])


def test_lime_then_topk(workdir):
    proc = shell(workdir, "ablate lime test.jsonl --model rn.safetensors --patch-size 4 --samples 100 "
                          "--out l.safetensors -q > lime.jsonl && ablate topk test.jsonl --model rn.safetensors "
                          "--explanations l.safetensors,random --kmax 16 --step 4 --patch-size 4 --summary t.json -q")
    assert proc.returncode == 0, proc.stderr
    ids = source_ids(workdir)
    lime = [json.loads(line)["ablate"] for line in (workdir / "lime.jsonl").read_text().splitlines()]
    tensors = load_file(workdir / "l.safetensors")
    _, meta = load_artifact(workdir / "l.safetensors")
    assert schema_errors(meta, "artifact-metadata") == [] and meta["ids"] == ids
    scores, ranking, pred0 = tensors["scores"], tensors["ranking"], tensors["pred0"]
    assert tuple(scores.shape) == (N, F) and tuple(ranking.shape) == (N, F) and tuple(pred0.shape) == (N,)
    for score, row, result, clean in zip(scores, ranking, lime, pred0.tolist(), strict=True):
        assert is_permutation(row)
        ranked = score[row.long()]
        assert torch.all(ranked[:-1] >= ranked[1:])  # the ranking is by LIME score, highest first
        assert result["ranking_top"] == row[:20].tolist() and result["pred0"] == clean
    rows = records(proc)
    assert [r["id"] for r in rows] == ids
    for row, clean in zip(rows, pred0.tolist(), strict=True):
        result = row["ablate"]
        assert result["schema"] == "ablate-topk/v1" and result["ks"] == [0, 4, 8, 12, 16]
        assert result["pred0"] == clean  # the same model without removal: the prediction LIME explained
        assert set(result["unchanged"]) == {"l", "random"}
        assert all(curve[0] == 1 and len(curve) == 5 and set(curve) <= {0, 1} for curve in result["unchanged"].values())
    summary = json.loads((workdir / "t.json").read_text())
    assert set(summary["sources"]) == {"l", "random"}
    for name, source in summary["sources"].items():
        assert 0.0 <= source["auc"] <= 1.0
        expected = [sum(r["ablate"]["unchanged"][name][j] for r in rows) / N for j in range(5)]
        assert source["frac_unchanged"] == pytest.approx(expected)


def removed_pixels(features):
    """32×32 True where one of the 4×4 grid features (row-major ids) lies."""
    hidden = torch.zeros(32, 32, dtype=torch.bool)
    for f in features:
        hidden[(f // 8) * 4:(f // 8) * 4 + 4, (f % 8) * 4:(f % 8) * 4 + 4] = True
    return hidden


def test_apply_writes_masks_and_pipes_into_certify(workdir):
    black, piped = side_by_side(
        workdir, ("apply", "test.jsonl", *GRID, "--remove", "16", "--fill", "black", "--out", "m.safetensors", "-q"),
        "ablate apply test.jsonl --patch-size 4 --remove 16 --fill drop --out m2.safetensors -q "
        "| certify run --model vit.safetensors --ablation-size 8 -q")
    assert black.returncode == 0, black.stderr
    source = [json.loads(line) for line in (workdir / "test.jsonl").read_text().splitlines()]
    tensors = load_file(workdir / "m.safetensors")
    _, meta = load_artifact(workdir / "m.safetensors")
    assert schema_errors(meta, "artifact-metadata") == [] and meta["ids"] == [r["id"] for r in source]
    masks, images = tensors["masks"], tensors["images"]
    assert masks.dtype == torch.uint8 and tuple(masks.shape) == (N, 32, 32) and tuple(images.shape) == (N, 3, 32, 32)
    for index, (record, original) in enumerate(zip(records(black), source, strict=True)):
        assert schema_errors(record, "image-record") == []
        assert record["mask"] == {"tensors": "m.safetensors", "key": "masks", "index": index}
        assert record["image"] == {"tensors": "m.safetensors", "key": "images", "index": index}
        result = record["ablate"]
        assert result["k"] == 16 and len(set(result["removed"])) == 16
        mask = masks[index]
        assert set(mask.unique().tolist()) <= {0, 255} and int((mask == 0).sum()) == 16 * 16
        hidden = mask == 0
        assert torch.equal(hidden, removed_pixels(result["removed"]))
        clean = load_image(original["image"], workdir)
        assert torch.all(images[index][:, hidden] == 0)
        assert torch.equal(images[index][:, ~hidden], clean[:, ~hidden])
    assert len({tuple(r["removed"]) for r in results(black)}) > 1  # random orders differ per record

    assert piped.returncode == 0, piped.stderr
    masks_only = load_file(workdir / "m2.safetensors")
    assert "images" not in masks_only and torch.equal(masks_only["masks"], masks)  # the order does not see the fill
    rows = records(piped)
    assert [r["id"] for r in rows] == [r["id"] for r in source]
    for index, (row, original) in enumerate(zip(rows, source, strict=True)):
        assert "certify" in row and row["ablate"]["fill"] == "drop" and row["image"] == original["image"]
        assert row["mask"] == {"tensors": "m2.safetensors", "key": "masks", "index": index}

    # the masked region is really ignored: white paint under the mask changes no vote, while certifying the
    # same images without the mask does change some
    painted = torch.stack([torch.where(mask.bool(), load_image(r["image"], workdir), torch.ones(3, 32, 32))
                           for r, mask in zip(source, masks, strict=True)])
    save_file({"images": painted}, workdir / "painted.safetensors")
    ablated = [{k: v for k, v in row.items() if k != "certify"} for row in rows]
    repainted = [{**row, "image": {"tensors": "painted.safetensors", "key": "images", "index": index}}
                 for index, row in enumerate(ablated)]
    (workdir / "painted.jsonl").write_text("".join(json.dumps(row) + "\n" for row in repainted))
    (workdir / "unmasked.jsonl").write_text("".join(json.dumps({k: v for k, v in row.items() if k != "mask"}) + "\n"
                                                    for row in ablated))
    again, unmasked = side_by_side(workdir, "certify run painted.jsonl --model vit.safetensors --ablation-size 8 -q",
                                   "certify run unmasked.jsonl --model vit.safetensors --ablation-size 8 -q")
    assert again.returncode == unmasked.returncode == 0, again.stderr + unmasked.stderr

    def votes(proc):
        return [(r["certify"]["counts_top"], r["certify"]["gap"]) for r in records(proc)]

    assert votes(again) == votes(piped)
    assert votes(unmasked) != votes(piped)


def test_usage_errors_exit_2(workdir):
    drop, q5, kmax = side_by_side(
        workdir, ("curve", "test.jsonl", "--model", "rn.safetensors", "--fill", "drop", *GRID),
        ("curve", "test.jsonl", "--model", "rn.safetensors", "--patch-size", "5"),
        ("curve", "test.jsonl", "--model", "rn.safetensors", *GRID, "--kmax", "100"))
    assert drop.returncode == 2 and "vision transformer" in drop.stderr and "black" in drop.stderr, drop.stderr
    assert q5.returncode == 2 and "divide" in q5.stderr, q5.stderr
    assert kmax.returncode == 2 and "--kmax 100" in kmax.stderr and "64" in kmax.stderr, kmax.stderr
    assert drop.stdout == q5.stdout == kmax.stdout == ""


def test_invalid_input_exit_3(workdir):
    ids = source_ids(workdir)
    save_artifact(workdir / "seg.safetensors", {"segments": torch.zeros(N, 16, 16, dtype=torch.int32)},
                  artifact_metadata(tool="test", kind="segments", ids=ids))
    lines = (workdir / "test.jsonl").read_text().splitlines()
    (workdir / "bad.jsonl").write_text("\n".join([*lines[:3], '{"id":"gone","image":"nowhere/gone.png"}',
                                                  *lines[3:5]]) + "\n")
    curve = ("curve", "--model", "rn.safetensors", "--step", "32", "-q")
    segments, bad, skipped = side_by_side(
        workdir, (*curve, "test.jsonl", "--segments", "seg.safetensors"), (*curve, "bad.jsonl", *GRID),
        (*curve, "bad.jsonl", *GRID, "--skip-invalid"))
    assert segments.returncode == 3 and "16×16" in segments.stderr and "32×32" in segments.stderr, segments.stderr
    assert segments.stdout == ""
    assert bad.returncode == 3 and "bad.jsonl:4, field 'image'" in bad.stderr, bad.stderr
    assert [r["id"] for r in records(bad)] == ids[:3]  # the records before the bad one were written
    assert skipped.returncode == 0, skipped.stderr
    rows = records(skipped)
    assert [r["id"] for r in rows] == [*ids[:3], "gone", *ids[3:5]]
    assert set(rows[3]) == {"id", "error"} and schema_errors(rows[3], "error-record") == []
    assert all(r["ablate"]["schema"] == "ablate-curve/v1" for r in rows[:3] + rows[4:])


def test_fit_writes_a_model_curve_loads(workdir):
    proc = ablate(workdir, "fit", "--data", DATA, "--split", "train", "--arch", "tiny_resnet", "--fill", "black", *GRID,
                  "--epochs", "1", "--out", "f.safetensors")
    assert proc.returncode == 0, proc.stderr
    metrics = records(proc)
    assert [m["epoch"] for m in metrics] == [1] and all(m["kind"] == "metric" and m["cmd"] == "fit" for m in metrics)
    _, meta = read_model_file(workdir / "f.safetensors")
    assert schema_errors(meta, "model-metadata") == []
    assert meta["training"]["missingness"] == {"fill": "black", "remove_frac": 0.5, "patch_size": 4,
                                               "partial": "drop"}
    curve = ablate(workdir, "curve", "test.jsonl", "--model", "f.safetensors", *GRID, "--step", "32", "-q")
    assert curve.returncode == 0, curve.stderr
    assert [r["ablate"]["model"] for r in records(curve)] == ["f.safetensors"] * N
    assert all(r["ablate"]["pred"][0] == r["ablate"]["pred0"] for r in records(curve))


def test_summarize_recomputes_the_written_summary(workdir, saliency_curve):
    """DESIGN: `summarize` recomputes the `--summary` of a run from its records."""
    _, _, recomputed = saliency_curve
    written = json.loads((workdir / "s.json").read_text())
    assert rounded({k: v for k, v in written.items() if k != "config"}) == rounded(recomputed)


def test_photos_of_any_size_are_fitted_to_the_model(workdir):
    """Mixed-size, greyscale, CMYK, 16-bit and EXIF photos through a real pipe: every one gets a curve."""
    from tests.photos import make_imagenet_folder

    make_imagenet_folder(workdir / "photos", train_per_class=0, val_per_class=1)
    curve = shell(workdir, "dataset export photos --split val --out photos-out -q "
                           "| ablate curve - --model rn.safetensors --fill black --patch-size 4 --step 32 -q")
    assert curve.returncode == 0, curve.stderr
    got = records(curve)
    assert len(got) == 7 and all("error" not in r and r["ablate"]["ks"] for r in got)


def test_a_timm_vit_at_224_drops_the_tokens_of_removed_patches(workdir):
    """vit_tiny_patch16_224 (random weights) on photos of any size fitted to 224, 16-pixel features = its tokens."""
    from confidently.models import create_model, save_model

    from tests.photos import make_imagenet_folder

    make_imagenet_folder(workdir / "photos224", train_per_class=0, val_per_class=1)
    torch.manual_seed(0)
    save_model(create_model("vit_tiny_patch16_224", 3, img_size=224), workdir / "vit224.safetensors")
    curve = shell(workdir, "dataset export photos224 --split val --out photos224-out -q | ablate curve - --model "
                           "vit224.safetensors --fill drop --patch-size 16 --step 98 --workers 2 -q")
    assert curve.returncode == 0, curve.stderr
    got = results(curve)
    assert len(got) == 7 and all(r["features"] == 196 and r["ks"] == [0, 98, 196] and r["true_removal"] for r in got)
    lime = shell(workdir, "dataset export photos224 --split val --out photos224-out -q | ablate lime - --model "
                          "vit224.safetensors --fill drop --patch-size 16 --samples 24 --out e224.safetensors -q "
                          "> lime224.jsonl && ablate topk lime224.jsonl --model vit224.safetensors --fill drop "
                          "--patch-size 16 "
                          "--explanations e224.safetensors,random --kmax 8 --step 4 -q")
    assert lime.returncode == 0, lime.stderr
    got = results(lime)
    assert len(got) == 7 and all(set(r["unchanged"]) == {"e224", "random"} and r["ks"] == [0, 4, 8] for r in got)
    explanations = load_file(workdir / "e224.safetensors")
    assert tuple(explanations["ranking"].shape) == (7, 196)


def test_fit_trains_a_timm_vit_at_224_with_the_thesis_recipe(workdir):
    """ROAR-style retraining of a ViT at ImageNet size (DeiT's recipe, token dropping) on a photo folder with a
    truncated JPEG, skipped and reported once."""
    from tests.photos import make_imagenet_folder

    make_imagenet_folder(workdir / "photos-fit", train_per_class=0, val_per_class=1, truncated=True)
    fit = ablate(workdir, "fit", "--data", "photos-fit", "--split", "val", "--arch", "vit_tiny_patch16_224",
                 "--img-size", "224", "--recipe", "thesis-deit", "--epochs", "2", "--batch-size", "4", "--fill",
                 "drop", "--patch-size", "16", "--workers", "0", "--skip-invalid", "--out", "vit-fit.safetensors")
    assert fit.returncode == 0, fit.stderr
    rows = records(fit)
    assert [r.get("epoch") for r in rows] == [None, 1, 2] and "truncated.JPEG" in rows[0]["error"]
    model = load_model(workdir / "vit-fit.safetensors")
    assert model.input_size == (3, 224, 224) and model.training_info["recipe"] == "thesis-deit"
    assert model.training_info["config"]["mixup"] == 0.8 and model.training_info["missingness"]["fill"] == "drop"

