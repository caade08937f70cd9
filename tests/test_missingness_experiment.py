"""The thesis's chapter-5 experiment on demo data (spec ablate §4.2), through the library.

Tiny ViT (4×4 tokens) and tiny ResNet trained on digits over grey noise, where black squares
are out of distribution as they are for photos. Removing random 4×4 patches: the ResNet with
black fill flips its predictions and piles them onto few classes; the ViT that drops the
tokens keeps both. Missingness augmentation (ROAR-style fine-tuning with 50 % of patches
removed) moves the ResNet's curve a lot and the ViT's hardly (U_16 gain measured 0.23 vs 0.03, with each
image's removed patches drawn from its record). LIME over the 8 binary colours
disagrees with itself on the ResNet. Gates are the directional facts of the spec's pilot,
averaged over three random-order seeds (one training seed: the suite's time budget).
"""

import copy
import math

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
from confidently.missingness import (
    LimeConfig,
    MissingnessModel,
    MissingnessTraining,
    class_entropy,
    color_fills,
    expected_random_jaccard,
    explain,
    grid_labels,
    make_fill,
    missingness_curves,
    pairwise_jaccard,
    removal_order,
)
from confidently.missingness.features import Features
from confidently.models import create_model
from confidently.run import record_generator
from confidently.training import TrainConfig, evaluate_accuracy, train_classifier

KS = [0, 8, 16, 24, 32, 48]
SPEC = "demo:digits?background=noisy"


def train(arch, data, **kwargs):
    torch.manual_seed(0)
    model = create_model(arch, 10, **kwargs)
    train_set = ImageDataset.from_tensors(*data)
    train_classifier(model, train_set, TrainConfig(epochs=12, lr=1e-3, batch_size=32, schedule="cosine",
                                               weight_decay=0.0))
    return model.eval()


def random_curves(model, fill, images, seeds=(0, 1, 2)):
    """(U_k, H_k / ln 10) averaged over three random-order seeds."""
    features = [Features(grid_labels(32, 32, 4), 64)] * len(images)
    unchanged, entropy = torch.zeros(len(KS)), torch.zeros(len(KS))
    for seed in seeds:
        orders = [removal_order("random", 64, None, record_generator(seed, str(i), "order"))
                  for i in range(len(images))]
        curves = missingness_curves(MissingnessModel(model, make_fill(fill), 512), images, features, orders, KS)
        unchanged += curves.unchanged().float().mean(0)
        entropy += torch.tensor([class_entropy(curves.pred[:, j].tolist()) / math.log(10) for j in range(len(KS))])
    return unchanged / len(seeds), entropy / len(seeds)


def augmented(model, fill, data):
    tuned = copy.deepcopy(model)
    hook = MissingnessTraining(make_fill(fill), 32, 32, 4, 0.5)
    train_set = ImageDataset.from_tensors(*data)
    config = TrainConfig(epochs=5, lr=3e-4, batch_size=32, schedule="cosine", weight_decay=0.0)
    train_classifier(tuned, train_set, config, perturb=hook, forward=hook.forward)
    return tuned.eval()


@pytest.mark.slow
def test_vit_token_dropping_has_no_missingness_bias_on_digits():
    data = collect(open_dataset(SPEC, "train"))
    images, labels = collect(open_dataset(SPEC, "test"))
    vit, resnet = train("tiny_vit", data, depth=2), train("tiny_resnet", data)
    assert evaluate_accuracy(vit, images, labels) > 0.75 and evaluate_accuracy(resnet, images, labels) > 0.9

    u_rn, h_rn = random_curves(resnet, "black", images)
    u_vit, h_vit = random_curves(vit, "drop", images)
    u_vit_black, h_vit_black = random_curves(vit, "black", images)
    print("k", KS)
    for name, u, h in (("resnet-black", u_rn, h_rn), ("vit-drop", u_vit, h_vit), ("vit-black", u_vit_black,
                                                                                    h_vit_black)):
        print(f"{name:13s} U {[round(float(v), 3) for v in u]}  H {[round(float(v), 3) for v in h]}")
    k16, k32 = KS.index(16), KS.index(32)
    assert (u_rn[0] == 1).all() and (u_vit[0] == 1).all()
    assert u_vit[k16] - u_rn[k16] >= 0.2  # the ViT keeps its predictions far longer
    assert h_vit[k32] >= 0.9  # ... and a near-uniform class histogram
    assert h_rn[k32] <= h_vit[k32] - 0.15  # the ResNet's predictions pile onto fewer classes
    assert h_rn[-1] < h_rn[1]

    u_rn_aug, _ = random_curves(augmented(resnet, "black", data), "black", images)
    u_vit_aug, _ = random_curves(augmented(vit, "drop", data), "drop", images)
    gain_rn, gain_vit = float(u_rn_aug[k16] - u_rn[k16]), float(u_vit_aug[k16] - u_vit[k16])
    print(f"ROAR-style augmentation: U_16 gain resnet {gain_rn:.3f}, vit-drop {gain_vit:.3f}")
    assert gain_rn >= 0.2 and abs(gain_vit) <= 0.12 and gain_rn > 2 * abs(gain_vit)

    subset = images[:30]
    features = [Features(grid_labels(32, 32, 4), 64)] * len(subset)
    rankings = []
    for fill in color_fills("binary8"):
        explanations = explain("own", MissingnessModel(resnet, fill, 2048), subset, features, LimeConfig(samples=200),
                               [record_generator(0, str(i), "lime") for i in range(len(subset))])
        rankings.append([e.ranking for e in explanations])
    jaccard = torch.stack([pairwise_jaccard([r[i] for r in rankings], [4, 8, 16]) for i in range(len(subset))])
    mean = jaccard.mean((0, 1))
    print(f"ResNet LIME consistency over binary8 at k=4,8,16: {mean.tolist()} "
          f"(random {[round(expected_random_jaccard(64, k), 3) for k in (4, 8, 16)]})")
    assert mean[1] <= 0.5 and mean[1] > expected_random_jaccard(64, 8)
