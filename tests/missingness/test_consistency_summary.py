import math
from itertools import combinations

import pytest
import torch
from confidently.errors import UsageError
from confidently.missingness import (
    Features,
    LimeConfig,
    MissingnessModel,
    class_entropy,
    drop_over,
    expected_random_jaccard,
    explain,
    grid_labels,
    make_fill,
    pairwise_jaccard,
    summarize_consistency,
    summarize_curves,
    summarize_topk,
    topk_jaccard,
)


def test_jaccard_is_one_on_itself_symmetric_and_bounded():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randperm(20, generator=generator), torch.randperm(20, generator=generator)
    ks = list(range(1, 21))
    assert topk_jaccard(a, a, ks) == [1.0] * 20
    ab, ba = topk_jaccard(a, b, ks), topk_jaccard(b, a, ks)
    assert ab == ba and all(0 <= j <= 1 for j in ab) and ab[-1] == 1.0
    assert topk_jaccard(torch.tensor([0, 1, 2, 3]), torch.tensor([2, 3, 0, 1]), [2]) == [0.0]
    assert pairwise_jaccard([a, b, a], ks).shape == (3, 20)


@pytest.mark.parametrize("k", [1, 4, 10, 30])
def test_random_reference_matches_monte_carlo(k):
    generator = torch.Generator().manual_seed(k)
    draws = [topk_jaccard(torch.randperm(64, generator=generator), torch.randperm(64, generator=generator), [k])[0]
             for _ in range(4000)]
    assert abs(sum(draws) / len(draws) - expected_random_jaccard(64, k)) < 0.01


def test_entropy_bounds():
    assert class_entropy([3] * 50) == 0.0
    assert math.isclose(class_entropy(list(range(10)) * 7), math.log(10))
    assert 0 < class_entropy([0, 0, 1]) < math.log(2)


def curve_record(pred0, preds):
    return {"ks": [0, 4, 8], "fill": "black", "order": "random", "pred0": pred0, "pred": preds,
            "p_orig": [0.9, 0.5, 0.1]}


def test_curve_summary_from_records_merges_like_one_run():
    records = [curve_record(i % 10, [i % 10, i % 10 if i % 3 else 7, 7]) for i in range(30)]
    whole = summarize_curves(records, 10)
    assert whole["frac_unchanged"][0] == 1.0 and whole["class_entropy_nats"][-1] == 0.0
    assert math.isclose(whole["class_entropy_norm"][0], 1.0)
    assert whole["top_classes_at_half"][0][0] == 7
    shuffled = records[1::2] + records[::2]
    assert summarize_curves(shuffled, 10) == whole
    similarity = torch.eye(10)
    assert summarize_curves(records, 10, similarity=similarity)["wup_changed"][2] == 0.0
    with pytest.raises(ValueError, match="ks"):
        summarize_curves([*records, {**records[0], "ks": [0, 1, 2]}], 10)


def test_consistency_and_topk_summaries():
    pairs = [list(p) for p in combinations(range(3), 2)]
    records = [{"ks": [1, 2], "features": 16, "fills": ["a", "b", "c"], "jaccard": [[1.0, 0.5]] * len(pairs)}] * 4
    summary = summarize_consistency(records)
    assert summary["jaccard_mean"] == [1.0, 0.5] and summary["pairs"] == 3
    assert summary["random_reference"][0] == pytest.approx(expected_random_jaccard(16, 1))
    topk = summarize_topk([{"ks": [0, 2, 4], "keep_top": False, "unchanged": {"own": [1, 0, 0], "random": [1, 1, 1]}},
                           {"ks": [0, 2, 4], "keep_top": False, "unchanged": {"own": [1, 1, 0], "random": [1, 1, 0]}}])
    assert topk["sources"]["own"]["frac_unchanged"] == [1.0, 0.5, 0.0]
    assert topk["sources"]["own"]["auc"] < topk["sources"]["random"]["auc"]


@pytest.mark.parametrize(("partial", "agree"), [("drop", True), ("keep", False)])
def test_drop_consistency_is_computed_from_the_paint_the_model_sees(vit, partial, agree):
    """2×2 features in 4×4 tokens: dropping every touched token hides the paint (rankings agree
    exactly); keeping partly removed tokens shows it, and the rankings move with the colour."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    features = [Features(grid_labels(32, 32, 2), 256)] * 2
    rankings = []
    for paint in ("black", "color:1,1,1"):
        model = MissingnessModel(vit, drop_over(make_fill(paint)), partial=partial)
        generators = [torch.Generator().manual_seed(i) for i in range(2)]
        explanations = explain("own", model, images, features, LimeConfig(samples=60), generators)
        rankings.append([e.ranking for e in explanations])
    jaccard = torch.stack([pairwise_jaccard([r[i] for r in rankings], [4, 16]) for i in range(2)])
    assert bool((jaccard == 1).all()) == agree
    with pytest.raises(UsageError, match="pixel fills"):
        drop_over(make_fill("drop"))
