"""The linear datamodels (ridge, lasso) against the difference of means, and the linear datamodeling score,
on the linear oracle whose true influences are known."""

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.influence import InfluenceSums, load_recipe, run_job, subset_plan
from confidently.influence.estimators import estimate_influence, list_estimators
from confidently.influence.lds import average_ranks, linear_datamodeling_score, load_holdout, spearman
from confidently.influence.plan import parse_job_ids, plan_checksum
from confidently.influence.results import sum_results


def farm(recipe, jobs):
    """Masks (m×K) and the oracle's outputs (m×n) of ``jobs``."""
    masks = torch.zeros(len(jobs), recipe.num_units, dtype=torch.bool)
    outputs = []
    for row, job in enumerate(jobs):
        masks[row, job["include"]] = True
        outputs.append(recipe.run(job["include"], job["train_seed"])[1]["oracle"].logits[:, 0])
    return masks, torch.stack(outputs)


def sums_of(masks, outputs, folds=5):
    return InfluenceSums.empty(masks.shape[1], torch.zeros(outputs.shape[1], dtype=torch.long), folds).add(
        masks, outputs, torch.arange(len(masks)))


def rmse(a, b):
    return float((a.double() - b.double()).square().mean().sqrt())


def test_the_estimators_are_registered():
    assert {"diff-means", "ridge", "lasso"} <= set(list_estimators())
    with pytest.raises(UsageError, match="unknown influence estimator"):
        estimate_influence(sums_of(torch.ones(4, 2).bool(), torch.zeros(4, 1)), "nope")


def test_ridge_and_lasso_at_a_given_penalty_match_scikit_learn():
    from sklearn.linear_model import Lasso, Ridge

    recipe = load_recipe({"kind": "oracle-linear", "units": 12, "targets": 5})
    masks, outputs = farm(recipe, subset_plan(12, 60, 0.5, "bernoulli", seed=2))
    x, y = masks.double().numpy(), outputs.double().numpy()
    for penalty in (0.003, 0.05):
        ridge = estimate_influence(sums_of(masks, outputs), "ridge", penalty=penalty)
        reference = Ridge(alpha=penalty * len(x)).fit(x, y)  # scikit-learn's objective is m times ours
        assert np.allclose(ridge.influence.numpy(), reference.coef_.T, atol=1e-5)
        assert np.allclose(ridge.intercept.numpy(), reference.intercept_, atol=1e-5)
        lasso = estimate_influence(sums_of(masks, outputs), "lasso", penalty=penalty)
        reference = Lasso(alpha=penalty, tol=1e-12, max_iter=100_000).fit(x, y)
        assert np.allclose(lasso.influence.numpy(), reference.coef_.T, atol=1e-5)
        assert np.allclose(lasso.intercept.numpy(), reference.intercept_, atol=1e-5)


@pytest.mark.parametrize("sampling", ["fixed", "bernoulli"])
def test_ridge_recovers_the_true_influences_better_than_the_difference_of_means(sampling):
    """Equal models (40): the difference of means counts every other unit's effect as noise, the regression
    removes it. Under fixed-size subsets only differences between units are identifiable: both are compared
    on the truth centred over units (the difference of means estimates K/(K−1) times it)."""
    recipe = load_recipe("oracle-linear")
    masks, outputs = farm(recipe, subset_plan(recipe.num_units, 40, 0.5, sampling, seed=0))
    sums = sums_of(masks, outputs)
    diff, ridge = estimate_influence(sums, "diff-means"), estimate_influence(sums, "ridge")
    truth = recipe.weights
    if sampling == "fixed":
        truth = truth - truth.mean(0)
        diff_error = rmse(diff.influence * (recipe.num_units - 1) / recipe.num_units, truth)
    else:
        diff_error = rmse(diff.influence, truth)
    ridge_error = rmse(ridge.influence, truth)
    print(f"{sampling}: rmse against the truth, diff-means {diff_error:.4f}, ridge {ridge_error:.4f}")
    assert ridge_error < diff_error / 2
    assert int(ridge.overall.argmax()) == 3 and int(ridge.overall.argmin()) == 7  # the planted units
    assert ridge.stderr.isfinite().all() and 0 < float(ridge.stderr.mean()) < float(diff.stderr.mean())


def test_lasso_recovers_a_sparse_truth():
    recipe = load_recipe({"kind": "oracle-linear", "background": 0.0, "noise": 0.1})  # only units 3 and 7 act
    masks, outputs = farm(recipe, subset_plan(recipe.num_units, 100, 0.5, "fixed", seed=1))
    lasso = estimate_influence(sums_of(masks, outputs), "lasso")
    ridge = estimate_influence(sums_of(masks, outputs), "ridge")
    others = [k for k in range(recipe.num_units) if k not in (3, 7)]
    assert float((lasso.influence[others] == 0).float().mean()) > 0.5  # CV picks for prediction: a few stay
    assert float((ridge.influence[others] == 0).float().mean()) == 0.0
    assert float(lasso.influence[others].abs().max()) < 0.1
    assert lasso.influence[3].tolist() == pytest.approx([1.0] * 30, abs=0.1)
    assert lasso.influence[7].tolist() == pytest.approx([-1.0] * 30, abs=0.1)
    assert rmse(lasso.influence, recipe.weights) < rmse(ridge.influence, recipe.weights)
    assert lasso.stderr.isnan().all()  # no closed form for the lasso's


def test_the_estimator_and_its_penalty_are_recorded():
    recipe = load_recipe("oracle-linear")
    masks, outputs = farm(recipe, subset_plan(recipe.num_units, 40, 0.5, "fixed", seed=0))
    per_target = estimate_influence(sums_of(masks, outputs), "ridge")
    details = per_target.details["regularisation"]
    assert per_target.details["estimator"] == "ridge" and details["penalty"] == "l2"
    assert details["chosen_by"] == "5-fold cross-validation" and details["scope"] == "per-target"
    assert details["chosen"]["min"] <= details["chosen"]["median"] <= details["chosen"]["max"]
    assert per_target.penalty.shape == (30,) and set(per_target.tensors()) >= {"intercept", "penalty"}
    one = estimate_influence(sums_of(masks, outputs, folds=4), "lasso", scope="global")
    assert one.details["regularisation"]["folds"] == 4 and isinstance(one.details["regularisation"]["chosen"], float)
    assert len(set(one.penalty.tolist())) == 1
    assert estimate_influence(sums_of(masks, outputs), "diff-means").details == {"estimator": "diff-means"}
    with pytest.raises(UsageError, match="Gram sums"):
        estimate_influence(sums_of(masks, outputs, folds=0), "ridge")


def test_linear_sums_merge_exactly_whatever_the_shards():
    recipe = load_recipe({"kind": "oracle-linear", "units": 10, "targets": 6})
    masks, outputs = farm(recipe, subset_plan(10, 50, 0.5, "fixed", seed=3))
    labels, ids = torch.zeros(6, dtype=torch.long), torch.arange(50)
    whole = InfluenceSums.empty(10, labels, 5).add(masks, outputs, ids)
    odd, even = ids % 2 == 1, ids % 2 == 0
    parts = InfluenceSums.empty(10, labels, 5).add(masks[odd], outputs[odd], ids[odd]).merge(
        InfluenceSums.empty(10, labels, 5).add(masks[even], outputs[even], ids[even]))
    parts = InfluenceSums.from_tensors(parts.tensors())
    for name in ("ridge", "lasso"):
        a, b = estimate_influence(whole, name), estimate_influence(parts, name)
        assert torch.allclose(a.influence, b.influence, atol=1e-6) and torch.equal(a.penalty, b.penalty)
    with pytest.raises(InvalidInput, match="folds"):
        whole.merge(InfluenceSums.empty(10, labels, 3).add(masks, outputs, ids))


def test_a_unit_in_every_model_is_nan_for_the_linear_models_too():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(30, 4, generator=generator) < 0.5
    masks[:, 0] = True
    effects = torch.tensor([[0.0], [1.0], [-1.0], [0.5]])
    outputs = masks.float() @ effects + 0.1 * torch.randn(30, 1, generator=generator)
    with pytest.warns(UserWarning, match="every model or in none"):
        ridge = estimate_influence(sums_of(masks, outputs), "ridge")
    assert ridge.influence[0].isnan().all() and not ridge.influence[1:].isnan().any()
    assert ridge.influence[1:, 0].tolist() == pytest.approx([1.0, -1.0, 0.5], abs=0.15)


def test_spearman_with_ties_matches_scipy():
    from scipy.stats import spearmanr

    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (25, 3), generator=generator).double()  # many ties
    b = a + torch.randn(25, 3, generator=generator)
    assert torch.equal(average_ranks(torch.tensor([[3.0], [1.0], [3.0], [2.0]]))[:, 0],
                       torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64))
    ours = spearman(a, b)
    for column in range(3):
        assert float(ours[column]) == pytest.approx(spearmanr(a[:, column], b[:, column]).statistic, abs=1e-12)
    assert spearman(torch.ones(5, 1), torch.arange(5.0)[:, None]).isnan().all()  # a constant column: undefined


def test_lds_ranks_the_estimators():
    """On held-out models: ridge ≥ diff-means, both far above a shuffled influence (≈ 0); the truth ≈ 1."""
    recipe = load_recipe("oracle-linear")
    jobs = subset_plan(recipe.num_units, 40, 0.5, "fixed", seed=0, holdout=40)
    masks, outputs = farm(recipe, jobs)
    fit, held = slice(0, 40), slice(40, 80)
    sums = sums_of(masks[fit], outputs[fit])
    scores = {}
    for name in ("diff-means", "ridge", "lasso"):
        scores[name] = float(linear_datamodeling_score(estimate_influence(sums, name).tensors(), masks[held],
                                                       outputs[held]).mean())
    ridge = estimate_influence(sums, "ridge").influence
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.stack([column[torch.randperm(len(column), generator=generator)] for column in ridge.T], 1)
    scores["shuffled"] = float(linear_datamodeling_score({"influence": shuffled}, masks[held], outputs[held]).mean())
    scores["truth"] = float(linear_datamodeling_score({"influence": recipe.weights}, masks[held],
                                                      outputs[held]).mean())
    print("LDS on 40 held-out models:", {k: round(v, 3) for k, v in scores.items()})
    assert scores["truth"] >= scores["ridge"] >= scores["diff-means"] > scores["shuffled"] + 0.5
    assert scores["lasso"] > scores["diff-means"]
    assert abs(scores["shuffled"]) < 0.15
    flat = linear_datamodeling_score({"influence": torch.zeros(20, 30)}, masks[held], outputs[held])
    assert torch.equal(flat, torch.zeros(30, dtype=torch.float64))  # predicting no differences ranks nothing: 0
    constant = linear_datamodeling_score({"influence": ridge}, masks[held], torch.ones(40, 30))
    assert constant.isnan().all()  # nothing to rank: undefined, left out of the mean


def test_holdout_jobs_are_planned_kept_out_of_estimates_and_scored(tmp_path):
    plain = subset_plan(20, 6, seed=2, run_id="h")
    jobs = subset_plan(20, 6, seed=2, run_id="h", holdout=3)
    assert [job["include"] for job in jobs[:6]] == [job["include"] for job in plain]
    assert [job.get("holdout", False) for job in jobs] == [False] * 6 + [True] * 3
    assert plan_checksum(jobs) != plan_checksum([{**job, "holdout": False} for job in jobs])
    assert parse_job_ids("3-5,9") == {3, 4, 5, 9} and parse_job_ids("all") is None
    with pytest.raises(UsageError, match="job ids"):
        parse_job_ids("3:5")
    recipe = load_recipe("oracle-linear")
    records = [run_job(recipe, job, tmp_path) for job in jobs]
    assert [r.get("holdout", False) for r in records] == [False] * 6 + [True] * 3
    files = sorted(tmp_path.rglob("job-*.safetensors"))
    sums, info = sum_results(files, output="logit_correct", folds=2)
    assert sums.models == 6 and info["job_ids"] == list(range(6)) and info["set_aside"] == 3
    _, fewer = sum_results(files, output="logit_correct", exclude={0, 1})
    assert fewer["job_ids"] == [2, 3, 4, 5] and fewer["set_aside"] == 5
    meta = {**info, "estimator": "ridge"}
    assert load_holdout(files, meta).meta["job_ids"] == [6, 7, 8]
    assert load_holdout(files, fewer, {0, 1, 6}).meta["job_ids"] == [0, 1, 6]
    with pytest.raises(InvalidInput, match="used to fit the estimate"):
        load_holdout(files, meta, {4, 6, 7})
    with pytest.raises(InvalidInput, match="another recipe"):
        load_holdout(files, {**meta, "recipe_sha256": "0" * 64})
