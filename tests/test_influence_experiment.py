"""The thesis's chapter-8 experiment on a small world (spec influence §4), through the library.

Synthetic concepts: source classes 0–3 carry the concepts the 4 target classes need. From 120
models trained on random halves of the 20 source classes, each target class's planted helper
comes out on top (ranked on a validation split); the bootstrap spread shrinks with more models;
and the counterfactual, scored on the test set —
retraining without the most helpful classes — hurts far more than removing random ones, while
removing the most harmful ones does not hurt (thesis Fig 8.2).
"""

import math

import pytest
import torch
from confidently.influence import (
    InfluenceSums,
    all_outputs,
    bootstrap_std,
    counterfactual_plan,
    estimate,
    load_recipe,
    subset_plan,
)


def train_all(recipe, jobs):
    """Masks, validation outputs (for ranking) and test accuracy (for reporting) of every job."""
    masks, outputs, accuracy = [], [], []
    for job in jobs:
        _, results = recipe.run(job["include"], job["train_seed"])
        val, test = results["concepts:val"], results["concepts"]
        mask = torch.zeros(recipe.num_units, dtype=torch.bool)
        mask[job["include"]] = True
        masks.append(mask)
        outputs.append(all_outputs(val.logits, val.labels)["softmax_correct"])
        accuracy.append(float(all_outputs(test.logits, test.labels)["correct"].mean()))
    return torch.stack(masks), torch.stack(outputs), accuracy, val.labels


@pytest.mark.slow
def test_influences_find_the_helpers_and_the_counterfactual_confirms_them():
    recipe = load_recipe("synthetic-concepts")
    masks, outputs, _, labels = train_all(recipe, subset_plan(recipe.num_units, 120, 0.5, "fixed", seed=0))
    influence = estimate(InfluenceSums.empty(recipe.num_units, labels).add(masks, outputs))
    print("top source class per target class:", influence.per_class.argmax(0).tolist())
    assert influence.per_class.argmax(0).tolist() == [0, 1, 2, 3]

    generator = torch.Generator().manual_seed(0)
    spread = {m: float(bootstrap_std(masks[:m], outputs[:m], labels, 100, generator).mean()) for m in (30, 60, 120)}
    print("bootstrap std of overall influence:", spread)
    assert spread[30] > spread[60] > spread[120]

    jobs = counterfactual_plan(influence.overall, ["bottom", "top", "random"], [0, 2, 4], runs=6, seed=0)
    _, _, accuracy, _ = train_all(recipe, jobs)
    curves: dict[tuple[str, int], list[float]] = {}
    for job, value in zip(jobs, accuracy, strict=True):
        curves.setdefault((job["order"], job["k"]), []).append(value)
    mean = {key: math.fsum(values) / len(values) for key, values in curves.items()}
    print({f"{order}@{k}": round(v, 3) for (order, k), v in sorted(mean.items())})
    full = mean[("full", 0)]
    assert mean[("top", 4)] < mean[("random", 4)] - 0.1 and mean[("top", 4)] < full - 0.1
    assert mean[("bottom", 2)] >= full - 0.02
