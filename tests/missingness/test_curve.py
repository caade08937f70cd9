import pytest
import torch
from confidently.missingness import (
    MissingnessModel,
    curve_auc,
    curve_ks,
    grid_labels,
    make_fill,
    missingness_curves,
    removal_order,
)
from confidently.missingness.features import Features
from confidently.run import derive_seed, record_generator

FILLS = ["black", "mean", "color:0.2,0.9,0.4", "random-color", "random-noise", "blur"]


def setup(count=4, seed=0):
    images = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    features = [Features(grid_labels(32, 32, 4), 64)] * count
    orders = [removal_order("random", 64, None, record_generator(seed, str(i), "order")) for i in range(count)]
    return images, features, orders


def seeds_for(count, ks):
    return [[derive_seed(0, str(i), "fill", k) for k in ks] for i in range(count)]


@pytest.mark.parametrize("fill", [*FILLS, "drop"])
def test_k0_leaves_every_prediction_unchanged(fill, resnet, vit):
    model = vit if fill == "drop" else resnet
    images, features, orders = setup()
    ks = curve_ks(64, 16)
    mm = MissingnessModel(model, make_fill(fill))
    curves = missingness_curves(mm, images, features, orders, ks, seeds=seeds_for(4, ks) if mm.fill.random else None)
    assert ks == [0, 16, 32, 48, 64]
    assert curves.unchanged()[:, 0].all()
    with torch.no_grad():
        assert torch.equal(curves.pred0, model(images).argmax(1))


@pytest.mark.parametrize("fill", ["random-noise", "drop"])
def test_every_row_k0_included_runs_through_the_model(fill, resnet, vit):
    """U₀ = 1 is a finding only if the k = 0 row is computed, not copied from the clean logits."""
    model = vit if fill == "drop" else resnet
    images, features, orders = setup(3)
    ks = [0, 8, 32]
    forwarded = []

    class Spy(MissingnessModel):
        def logits(self, images, rows, visible, seeds=None):
            out = super().logits(images, rows, visible, seeds)
            forwarded.append((rows.clone(), visible.clone(), out))
            return out

    mm = Spy(model, make_fill(fill))
    curves = missingness_curves(mm, images, features, orders, ks, seeds=seeds_for(3, ks) if mm.fill.random else None)
    rows, visible, out = forwarded[-1]
    assert rows.tolist() == [i for i in range(3) for _ in ks]
    assert visible.view(3, len(ks), -1).sum(-1)[:, 0].tolist() == [32 * 32] * 3  # the k = 0 rows see every pixel
    with torch.no_grad():
        plain = model(images).softmax(1)
    assert torch.allclose(curves.p_orig[:, 0], plain.gather(1, curves.pred0[:, None]).squeeze(1), atol=1e-5)
    assert torch.equal(curves.pred, out.view(3, len(ks), -1).argmax(-1))


def test_curves_do_not_depend_on_batching(resnet):
    images, features, orders = setup(6)
    ks = curve_ks(64, 8)
    seeds = seeds_for(6, ks)
    whole = missingness_curves(MissingnessModel(resnet, make_fill("random-noise"), 512), images, features, orders,
                               ks, seeds=seeds)
    parts = [missingness_curves(MissingnessModel(resnet, make_fill("random-noise"), 5), images[i:i + 3],
                                features[i:i + 3], orders[i:i + 3], ks, seeds=seeds[i:i + 3]) for i in (0, 3)]
    assert torch.equal(whole.pred, torch.cat([p.pred for p in parts]))
    assert torch.allclose(whole.p_orig, torch.cat([p.p_orig for p in parts]), atol=1e-5)


def test_same_order_gives_two_models_the_same_removed_sets(resnet, vit):
    images, features, orders = setup(2)
    seen = []

    class Spy(MissingnessModel):
        def logits(self, images, rows, visible, seeds=None):
            seen.append(visible.clone())
            return super().logits(images, rows, visible, seeds)

    for model, fill in ((resnet, "black"), (vit, "drop")):
        missingness_curves(Spy(model, make_fill(fill)), images, features, orders, [0, 8, 32])
    assert torch.equal(seen[1], seen[3])


def test_oracle_ranking_decays_faster_than_random_and_keep_top_flips(additive):
    model, weights = additive
    images = torch.ones(1, 1, 16, 16)
    features = [Features(grid_labels(16, 16, 4), 16)]
    mm = MissingnessModel(model, make_fill("black"))
    oracle = torch.sort(weights, descending=True).indices
    ks = list(range(17))
    oracle_curve = missingness_curves(mm, images, features, [oracle], ks)
    first_flip = oracle_curve.first_flip()[0]
    assert first_flip is not None
    random_aucs = []
    for seed in range(20):
        shuffled = removal_order("random", 16, None, torch.Generator().manual_seed(seed))
        curve = missingness_curves(mm, images, features, [shuffled], ks)
        random_aucs.append(curve_auc(ks, curve.unchanged()[0].float().tolist()))
    oracle_auc = curve_auc(ks, oracle_curve.unchanged()[0].float().tolist())
    assert oracle_auc < sum(random_aucs) / len(random_aucs)
    keep = missingness_curves(mm, images, features, [oracle], ks, keep_top=True)
    keep_auc = curve_auc(ks, keep.unchanged()[0].float().tolist())
    assert keep_auc > oracle_auc  # keeping the top-k holds the prediction; removing them flips it


def test_ks_and_auc():
    assert curve_ks(10, 4) == [0, 4, 8, 10]
    assert curve_ks(64, 2, 6) == [0, 2, 4, 6]
    assert curve_auc([0, 2, 4], [1.0, 1.0, 1.0]) == 1.0
    assert curve_auc([0, 2, 4], [1.0, 0.0, 0.0]) == 0.25
