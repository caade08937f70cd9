import warnings

import pytest
import torch
from confidently.influence import InfluenceSums, estimate, load_recipe, subset_plan


def literal(masks, outputs):
    """Algorithm 1 line 7 as a double loop."""
    units, targets = masks.shape[1], outputs.shape[1]
    out = torch.zeros(units, targets, dtype=torch.float64)
    for k in range(units):
        for j in range(targets):
            inside = [float(outputs[i, j]) for i in range(len(masks)) if masks[i, k]]
            outside = [float(outputs[i, j]) for i in range(len(masks)) if not masks[i, k]]
            out[k, j] = sum(inside) / len(inside) - sum(outside) / len(outside)
    return out


def test_estimator_equals_the_definition():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(40, 6, generator=generator) < 0.5
    outputs = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    result = estimate(InfluenceSums.empty(6, torch.zeros(5, dtype=torch.long)).add(masks, outputs))
    assert torch.allclose(result.influence.double(), literal(masks, outputs), atol=1e-6)
    assert (result.n_in + result.n_out == 40).all()


def test_shards_merge_exactly_in_any_order():
    generator = torch.Generator().manual_seed(1)
    masks = torch.rand(30, 8, generator=generator) < 0.5
    outputs = torch.randn(30, 4, generator=generator)
    labels = torch.tensor([0, 1, 0, 1])
    whole = estimate(InfluenceSums.empty(8, labels).add(masks, outputs))
    parts = InfluenceSums.empty(8, labels).add(masks[20:], outputs[20:]).merge(
        InfluenceSums.empty(8, labels).add(masks[:20], outputs[:20]))
    merged = estimate(InfluenceSums.from_tensors(parts.tensors()))
    assert torch.allclose(whole.influence, merged.influence, atol=1e-6)
    assert torch.allclose(whole.per_class, merged.per_class, atol=1e-6)
    dropped = estimate(InfluenceSums.empty(8, labels).add(masks[1:], outputs[1:]))
    assert not torch.allclose(dropped.influence, whole.influence)


def test_fixed_size_sampling_recovers_the_affine_map_and_planted_units():
    recipe = load_recipe({"kind": "oracle-linear", "units": 12, "targets": 6, "noise": 0.05, "helper": 2,
                          "harmful": 9})
    jobs = subset_plan(12, 400, 0.5, "fixed", seed=3)
    masks = torch.zeros(len(jobs), 12, dtype=torch.bool)
    outputs = []
    for row, job in enumerate(jobs):
        masks[row, job["include"]] = True
        _, results = recipe.run(job["include"], job["train_seed"])
        outputs.append(results["oracle"].logits[:, 0])
    result = estimate(InfluenceSums.empty(12, torch.zeros(6, dtype=torch.long)).add(masks, torch.stack(outputs)))
    weights = recipe.weights
    expected = (12 * weights - weights.sum(0, keepdim=True)) / 11  # E[Infl] under fixed-size subsets
    assert ((result.influence - expected).abs() <= 4 * result.stderr + 1e-3).float().mean() > 0.95
    assert int(result.overall.argmax()) == 2 and int(result.overall.argmin()) == 9


def test_bernoulli_sampling_is_unbiased():
    recipe = load_recipe({"kind": "oracle-linear", "units": 10, "targets": 4, "noise": 0.05})
    jobs = subset_plan(10, 600, 0.5, "bernoulli", seed=4)
    masks = torch.zeros(len(jobs), 10, dtype=torch.bool)
    outputs = []
    for row, job in enumerate(jobs):
        masks[row, job["include"]] = True
        outputs.append(recipe.run(job["include"], job["train_seed"])[1]["oracle"].logits[:, 0])
    result = estimate(InfluenceSums.empty(10, torch.zeros(4, dtype=torch.long)).add(masks, torch.stack(outputs)))
    assert torch.allclose(result.influence, recipe.weights, atol=4 * float(result.stderr.max()))


def test_standard_errors_shrink_like_one_over_root_m():
    recipe = load_recipe({"kind": "oracle-linear", "units": 10, "targets": 4, "noise": 0.3})
    spreads = []
    for models in (100, 400):
        jobs = subset_plan(10, models, 0.5, "fixed", seed=5)
        masks = torch.zeros(models, 10, dtype=torch.bool)
        outputs = []
        for row, job in enumerate(jobs):
            masks[row, job["include"]] = True
            outputs.append(recipe.run(job["include"], job["train_seed"])[1]["oracle"].logits[:, 0])
        spreads.append(float(estimate(InfluenceSums.empty(10, torch.zeros(4, dtype=torch.long)).add(
            masks, torch.stack(outputs))).stderr.mean()))
    assert 1.6 <= spreads[0] / spreads[1] <= 2.5


def test_a_unit_in_every_model_is_nan_with_a_warning():
    masks = torch.zeros(6, 3, dtype=torch.bool)
    masks[:, 0] = True
    masks[::2, 1] = True
    with pytest.warns(UserWarning, match="every model or in none"):
        result = estimate(InfluenceSums.empty(3, torch.zeros(2, dtype=torch.long)).add(masks, torch.rand(6, 2)))
    assert result.influence[0].isnan().all() and result.influence[2].isnan().all()
    assert not result.influence[1].isnan().any()
    mixed = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]]).bool()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-mixed plan raises no warning
        estimate(InfluenceSums.empty(2, torch.zeros(2, dtype=torch.long)).add(mixed, torch.rand(6, 2)))
