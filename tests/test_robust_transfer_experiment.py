"""The thesis's chapter-2 result on demo data (spec advtrain §4.2), run through the library.

Source task: digits 0–4 (8×8, the 80 % train split). Target task: digits 5–9 with 10
labelled images per class; the rest is the target test set. Sources are trained standard
(eps 0) and l2-robust (eps 1, 3) with the pilot recipe; each is transferred fixed-feature
and full-network. Expected, as in the thesis: fixed-feature transfer from a moderately
robust source beats the standard source, falls again at a large eps (inverted U), and
full-network transfer stays roughly level.
"""

import statistics

import pytest
import torch
from confidently.adversarial import AdversarialPerturb, PGDConfig
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
from confidently.models import create_model
from confidently.training import TrainConfig, evaluate_accuracy, train_classifier
from confidently.transfer import transfer

SOURCE_RECIPE = TrainConfig(optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, batch_size=64, epochs=30,
                            schedule="cyclic", peak_epoch=6)
EPS = (0.0, 1.0, 3.0)
SEEDS = (0, 1, 2)


def tasks():
    data = open_dataset("demo:digits?size=8")
    images, labels = collect(data)
    train = torch.tensor([r.data["split"] == "train" for r in data.records])
    source = (labels < 5) & train
    target_images, target_labels = images[labels >= 5], labels[labels >= 5] - 5
    order = torch.randperm(len(target_labels), generator=torch.Generator().manual_seed(0))
    few = torch.cat([order[target_labels[order] == c][:10] for c in range(5)])
    rest = torch.ones(len(target_labels), dtype=torch.bool)
    rest[few] = False
    return ((images[source], labels[source]), (target_images[few], target_labels[few]),
            (target_images[rest], target_labels[rest]))


@pytest.mark.slow
def test_fixed_feature_transfer_prefers_a_moderately_robust_source():
    (source_x, source_y), (few_x, few_y), (test_x, test_y) = tasks()
    results = {(eps, mode): [] for eps in EPS for mode in ("fixed", "full")}
    for eps in EPS:
        for source_seed in SEEDS:
            torch.manual_seed(source_seed)
            model = create_model("small_cnn", 5)
            recipe = TrainConfig(**{**SOURCE_RECIPE.as_dict(), "seed": source_seed})
            perturb = AdversarialPerturb(PGDConfig.training("l2", eps)) if eps else None
            train_classifier(model, ImageDataset.from_tensors(source_x, source_y), recipe, perturb=perturb)
            for mode in ("fixed", "full"):
                for seed in SEEDS:
                    torch.manual_seed(seed)
                    config = TrainConfig(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, batch_size=16,
                                         epochs=50, schedule="cyclic", seed=seed)
                    target = transfer(model, ImageDataset.from_tensors(few_x, few_y), config, mode=mode, num_classes=5)
                    results[(eps, mode)].append(evaluate_accuracy(target, test_x, test_y))
    mean = {key: statistics.mean(values) for key, values in results.items()}
    for eps in EPS:
        print(f"eps {eps}: fixed {mean[(eps, 'fixed')]:.3f}  full {mean[(eps, 'full')]:.3f}")
    assert mean[(1.0, "fixed")] >= mean[(0.0, "fixed")] + 0.02  # robust features transfer better
    assert mean[(3.0, "fixed")] < mean[(1.0, "fixed")]  # ... up to a point (inverted U)
    assert abs(mean[(1.0, "full")] - mean[(0.0, "full")]) < 0.03  # full-network: roughly level
