"""Metrics between edits (spec §2.7, §4 properties 9 and 11) and the robustness transforms."""

from __future__ import annotations

import math

import piq
import pytest
import torch
import torch.nn.functional as F
from confidently.errors import InvalidInput, UsageError
from confidently.immunize.metrics import (
    PAIR_METRICS,
    ScoreSummary,
    extract_features,
    frechet_distance,
    inception_features,
    latent_features,
    list_metrics,
    mean_std,
    parse_metrics,
    score_image_pairs,
    score_pairs,
    set_scores,
)
from confidently.immunize.transforms import apply_transform, parse_transform, parse_transforms, transform_field

PAIR = [n for n in list_metrics() if n in PAIR_METRICS]


def smooth_images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images (bicubic-upsampled 8×8 noise) with some structure at every scale."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 8, 8, generator=generator)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_names_and_thesis_order():
    assert list_metrics() == ["ssim", "psnr", "vifp", "fsim", "srsim", "gmsd", "vsi", "dss", "haarpsi", "fid", "pr"]
    assert parse_metrics("ssim, fid,psnr") == (["ssim", "psnr"], ["fid"])
    assert parse_metrics("all") == (PAIR, ["fid", "pr"])
    with pytest.raises(UsageError, match="unknown metric 'lpips'.*ssim"):
        parse_metrics("ssim,lpips")


def test_identical_images_score_perfectly():
    x = smooth_images(2)
    values, notes = score_pairs(x, x)
    assert notes == {}
    for name in ("ssim", "vifp", "fsim"):
        assert values[name] == pytest.approx([1.0, 1.0], abs=1e-5), name
    assert values["gmsd"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert all(v >= 60 for v in values["psnr"])  # piq's eps makes it large and finite, not inf
    for name in ("srsim", "vsi", "dss", "haarpsi"):
        assert values[name] == pytest.approx([1.0, 1.0], abs=1e-4), name


def test_every_metric_is_monotone_in_additive_noise():
    x = smooth_images(1, seed=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    levels = [0.0, 0.01, 0.03, 0.1, 0.3]
    tests = torch.cat([(x + s * noise).clamp(0, 1) for s in levels])
    values, _ = score_pairs(x.expand(len(levels), -1, -1, -1), tests)
    for name in PAIR:
        row = values[name]
        direction = 1 if PAIR_METRICS.get(name).higher_is_similar else -1
        assert all(direction * (a - b) > 0 for a, b in zip(row, row[1:], strict=False)), (name, row)


def test_values_match_piq_called_directly():
    ref, test = smooth_images(3, seed=1), smooth_images(3, seed=2)
    test = (0.7 * test + 0.3 * ref).clamp(0, 1)
    values, _ = score_pairs(ref, test)
    direct = {
        "ssim": piq.ssim(test, ref, data_range=1.0, reduction="none"),
        "psnr": piq.psnr(test, ref, data_range=1.0, reduction="none"),
        "vifp": piq.vif_p(test, ref, data_range=1.0, reduction="none"),
        "fsim": piq.fsim(test, ref, data_range=1.0, reduction="none", chromatic=True),
        "gmsd": piq.gmsd(test, ref, data_range=1.0, reduction="none"),
        "vsi": piq.vsi(test, ref, data_range=1.0, reduction="none"),
        "dss": piq.dss(test, ref, data_range=1.0, reduction="none"),
        "haarpsi": piq.haarpsi(test, ref, data_range=1.0, reduction="none"),
        # piq.srsim normalises saliency over the batch, so it is taken pair by pair
        "srsim": torch.cat([piq.srsim(test[i:i + 1], ref[i:i + 1], data_range=1.0).reshape(1) for i in range(3)]),
    }
    for name, expected in direct.items():
        assert values[name] == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6), name


def test_scores_do_not_depend_on_the_batch():
    ref, test = smooth_images(4, seed=4), smooth_images(4, seed=5)
    together, _ = score_pairs(ref, test)
    alone = [score_pairs(ref[i], test[i])[0] for i in range(4)]
    for name in PAIR:
        assert together[name] == pytest.approx([a[name][0] for a in alone], rel=1e-5, abs=1e-6), name


def test_vifp_takes_the_reference_first():
    """VIF of a contrast-enhanced copy exceeds 1 (Sheikh & Bovik) only with the original as reference."""
    ref = 0.3 + 0.4 * smooth_images(1, seed=6)
    enhanced = (ref - 0.5) * 1.5 + 0.5  # stays inside [0, 1]: no clipping
    forward, _ = score_pairs(ref, enhanced, ["vifp"])
    backward, _ = score_pairs(enhanced, ref, ["vifp"])
    assert forward["vifp"][0] > 1.05 and backward["vifp"][0] < 0.95


def test_small_images_are_upsampled_or_skipped_with_a_reason():
    x = smooth_images(2, size=32)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    values, notes = score_pairs(x, y)
    assert all(v is not None for row in values.values() for v in row)
    assert set(notes) == {"vifp", "srsim"} and "64×64" in notes["vifp"] and "41" in notes["vifp"]
    # nearest ×2 upsampling: exactly the metric of the pixel-repeated images
    big = x.repeat_interleave(2, -2).repeat_interleave(2, -1), y.repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert values["vifp"] == pytest.approx(piq.vif_p(big[1], big[0], reduction="none").tolist(), rel=1e-6)
    same, _ = score_pairs(x, x)
    assert same["vifp"] == pytest.approx([1.0, 1.0], abs=1e-5)
    skipped, reasons = score_pairs(x, y, small="skip")
    assert skipped["vifp"] == [None, None] and "needs ≥ 41 px" in reasons["vifp"] and "32×32" in reasons["vifp"]
    assert skipped["ssim"] == values["ssim"]
    tiny, reasons = score_pairs(x[..., :8, :8], y[..., :8, :8], ["ssim", "psnr", "haarpsi"])
    assert all(v is not None for row in tiny.values() for v in row) and set(reasons) == {"ssim", "haarpsi"}


def test_bad_inputs():
    x = smooth_images(1)
    with pytest.raises(InvalidInput, match="same size"):
        score_pairs(x, smooth_images(1, size=48))
    with pytest.raises(InvalidInput, match=r"outside \[0, 1\]"):
        score_pairs(x, x * 2)
    with pytest.raises(UsageError, match="unknown metric"):
        score_pairs(x, x, ["nope"])
    with pytest.raises(UsageError):
        score_pairs(x, x, small="crop")


def test_score_image_pairs_batches_mixed_sizes_in_order():
    small, large = smooth_images(3, size=32, seed=7), smooth_images(3, size=64, seed=8)
    pairs = [(small[0], small[1]), (large[0], large[1]), (small[2], small[0]), (large[2], large[2])]
    scores = score_image_pairs(pairs, ["ssim", "vifp"], batch_size=2)
    for (ref, test), score in zip(pairs, scores, strict=True):
        expected = {name: row[0] for name, row in score_pairs(ref, test, ["ssim", "vifp"])[0].items()}
        assert score.values == pytest.approx(expected, rel=1e-6)
    assert "vifp" in scores[0].notes and scores[1].notes == {}
    assert scores[3].values["ssim"] == pytest.approx(1.0)


def test_set_metrics_on_features():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 6, generator=generator), torch.randn(12, 6, generator=generator) + 3
    same = set_scores(a, a, ["fid", "pr"])
    far = set_scores(a, b, ["fid", "pr"])
    assert same.values["fid"] == pytest.approx(0, abs=1e-3) and same.values["pr"] == 1 and same.values["pr_recall"] == 1
    assert far.values["fid"] > 9 and far.values["pr"] < 0.5
    few = set_scores(a[:4], b[:4], ["fid", "pr"])
    assert few.values["pr"] is None and "needs ≥ 6 pairs" in few.skipped["pr"] and few.values["fid"] is not None
    assert "rank-deficient" in few.notes["fid"]


@pytest.mark.parametrize(("n_ref", "n_test", "dims"), [(12, 12, 6), (40, 30, 8), (8, 8, 32), (20, 20, 64)])
def test_frechet_distance_equals_piq_fid(n_ref, n_test, dims):
    """Exact (SVD / eigh) instead of piq's Newton–Schulz iteration, which takes ~25 s at 2048 dims."""
    import contextlib
    import io

    generator = torch.Generator().manual_seed(dims)
    a = torch.randn(n_ref, dims, generator=generator, dtype=torch.float64)
    b = 0.7 * torch.randn(n_test, dims, generator=generator, dtype=torch.float64) + 0.3
    with contextlib.redirect_stdout(io.StringIO()):
        expected = float(piq.FID()(a, b))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-4)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


def test_fid_never_downloads_and_bad_weight_files_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        inception_features(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InvalidInput, match="pytorch-fid InceptionV3"):
        inception_features(wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(InvalidInput, match="not a readable state dict"):
        inception_features(junk)
    # no features at all: FID/PR are skipped with the reason, per group
    summary = ScoreSummary(["ssim"], ["fid", "pr"], features=None, features_skipped="no Inception weights")
    summary.add(("encoder",), None, {"ssim": 0.5})
    (record,) = summary.records()
    assert record["fid"] is None and record["pr"] is None and record["pr_recall"] is None
    assert record["skipped"] == {"fid": "no Inception weights", "pr": "no Inception weights"}


def test_latent_features_proxy_is_fixed_size():
    encode = lambda images: F.avg_pool2d(images * 2 - 1, 2)[:, :2]  # noqa: E731 - a stand-in encoder
    features = extract_features([*smooth_images(2, size=32), *smooth_images(1, size=64)], latent_features(encode, 4))
    assert features.shape == (3, 2 * 4 * 4)


def test_summary_groups_transforms_and_statistics():
    summary = ScoreSummary(["ssim", "psnr"], ["fid"], group_by=["method"], transforms=["jpeg:75"],
                           features="test", nearest_k=5)
    feature = torch.ones(3)
    for method, values in (("random", [0.9, 0.7]), ("encoder", [0.5, 0.3, None])):
        for i, v in enumerate(values):
            group = summary.group_of({"method": method})
            summary.add(group, None, {"ssim": v, "psnr": 20.0}, ref_features=feature * i, test_features=feature * i)
            if i == 0:
                summary.add(group, "jpeg:75", {"ssim": 0.1, "psnr": 10.0})
            else:
                summary.add_missing(group, "jpeg:75")
    records = summary.records()
    assert [(r["method"], r["transform"]) for r in records] == [("random", None), ("random", "jpeg:75"),
                                                                ("encoder", None), ("encoder", "jpeg:75")]
    random, random_jpeg, encoder, _ = records
    assert random["kind"] == "immunize.summary" and random["n"] == 2 and random["test"] == "edit_immunized"
    assert random["ssim"] == pytest.approx({"mean": 0.8, "std": 0.1, "n": 2})
    assert encoder["ssim"]["n"] == 2 and encoder["n"] == 3
    assert random["fid"] == pytest.approx(0, abs=1e-6)
    assert random_jpeg["test"] == "edit_immunized_jpeg_75" and random_jpeg["missing"] == 1
    assert random_jpeg["fid"] is None and "features missing" in random_jpeg["skipped"]["fid"]
    assert mean_std([None, float("nan")]) is None


# ------------------------------------------------------------------------------------------------ transforms


def test_transform_specs_parse_and_name_fields():
    assert parse_transform("jpeg:75").spec == "jpeg:75" and parse_transform(" resize:0.50").spec == "resize:0.5"
    assert [t.spec for t in parse_transforms("jpeg:75,resize:0.5, blur:1,jpeg:75")] == ["jpeg:75", "resize:0.5",
                                                                                        "blur:1"]
    assert transform_field("edit_immunized", "jpeg:75") == "edit_immunized_jpeg_75"
    assert transform_field("edit_immunized", "resize:0.5") == "edit_immunized_resize_0p5"
    assert transform_field("edit_clean", "rotate:-5.5") == "edit_clean_rotate_m5p5"
    for bad, message in (("shear:3", "unknown transform 'shear'"), ("jpeg", "expected jpeg:VALUE"),
                         ("crop:1", "0 < F < 1"), ("rotate:0", "-180 < D < 180"), ("rotate:200", "degrees"),
                         ("jpeg:abc", "not a number"), ("jpeg:0", "quality"), ("jpeg:75.5", "integer"),
                         ("resize:1.5", "0 < S < 1"), ("blur:-1", "standard deviation"), ("blur:nan", "finite")):
        with pytest.raises(UsageError, match=message):
            parse_transform(bad)


def test_transforms_change_the_image_keep_range_shape_and_are_deterministic():
    x = smooth_images(2, size=48)
    for spec in ("jpeg:75", "resize:0.5", "blur:1", "crop:0.8", "rotate:10"):
        out = apply_transform(x, spec)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert (out - x).abs().max() > 1e-3, spec
        assert torch.equal(out, apply_transform(x, spec))
        assert torch.equal(apply_transform(x[0], spec), out[0])  # C×H×W works too
    jpeg = apply_transform(x, "jpeg:75")
    assert torch.equal(jpeg, (jpeg * 255).round() / 255)  # decoded 8-bit pixels
    assert (apply_transform(x, "jpeg:30") - x).abs().mean() > (jpeg - x).abs().mean()
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = apply_transform(noisy, "blur:1")
    assert (blurred - x).abs().mean() < (noisy - x).abs().mean()  # a blur removes high frequencies
    odd = smooth_images(1, size=37)
    assert apply_transform(odd, "resize:0.5").shape == odd.shape
    # a rotation is rigid (four quarter turns of a square image come back), a crop magnifies the centre
    square = smooth_images(1, size=32)
    assert torch.allclose(apply_transform(square, "rotate:90"), torch.rot90(square, 1, (-2, -1)), atol=1e-5) or \
        torch.allclose(apply_transform(square, "rotate:90"), torch.rot90(square, -1, (-2, -1)), atol=1e-5)
    flat = torch.full((1, 3, 16, 24), 0.25)
    assert torch.allclose(apply_transform(flat, "rotate:33"), flat)
    assert torch.allclose(apply_transform(flat, "crop:0.5"), flat)
    assert math.isclose(float(apply_transform(torch.full((1, 3, 16, 16), 0.5), "resize:0.25").mean()), 0.5,
                        abs_tol=1e-6)
