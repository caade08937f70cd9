import numpy as np
import pytest
import torch
from confidently.missingness import (
    LimeConfig,
    MissingnessModel,
    explain,
    grid_labels,
    kernel_weights,
    make_fill,
    perturbations,
    weighted_ridge,
)
from confidently.missingness.features import Features
from confidently.missingness.lime import fit_explanation
from confidently.run import record_generator


def test_weighted_ridge_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    generator = torch.Generator().manual_seed(0)
    z = torch.randint(0, 2, (300, 12), generator=generator).double()
    y = z @ torch.randn(12, generator=generator, dtype=torch.float64) + 0.1 * torch.randn(300, generator=generator,
                                                                                           dtype=torch.float64)
    w = torch.rand(300, generator=generator, dtype=torch.float64)
    coef, intercept, r2 = weighted_ridge(z, y, w, 1.0)
    reference = Ridge(alpha=1.0).fit(z.numpy(), y.numpy(), sample_weight=w.numpy())
    assert np.allclose(coef.numpy(), reference.coef_, atol=1e-8)
    assert abs(intercept - reference.intercept_) < 1e-8
    assert abs(r2 - reference.score(z.numpy(), y.numpy(), sample_weight=w.numpy())) < 1e-8


def test_kernel_uses_cosine_distance_to_all_ones():
    from sklearn.metrics import pairwise_distances

    z = torch.randint(0, 2, (50, 9), generator=torch.Generator().manual_seed(1)).double()
    z[0] = 1
    z[1] = 0
    distance = pairwise_distances(z.numpy(), np.ones((1, 9)), metric="cosine").ravel()
    expected = np.sqrt(np.exp(-distance**2 / 0.25**2))
    assert np.allclose(kernel_weights(z, 0.25).numpy(), expected)


def test_lime_recovers_the_known_ranking(additive):
    model, weights = additive
    mm = MissingnessModel(model, make_fill("black"))
    features = [Features(grid_labels(16, 16, 4), 16)]
    (explanation,) = explain("own", mm, torch.ones(1, 1, 16, 16), features, LimeConfig(samples=1000),
                             [record_generator(0, "x", "lime")])
    assert explanation.pred0 == 1
    assert explanation.ranking[:5].tolist() == torch.sort(weights, descending=True).indices[:5].tolist()


def test_explanations_do_not_depend_on_batching(resnet):
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    features = [Features(grid_labels(32, 32, 8), 16)] * 5
    config = LimeConfig(samples=60)

    def run(batch_size, chunk):
        mm = MissingnessModel(resnet, make_fill("random-color"), batch_size)
        out = []
        for start in range(0, 5, chunk):
            ids = [str(i) for i in range(start, min(5, start + chunk))]
            seeds = [[hash((i, t)) % 2**31 for t in range(60)] for i in ids]
            out += explain("own", mm, images[start:start + chunk], features[start:start + chunk], config,
                           [record_generator(0, i, "lime") for i in ids], seeds)
        return torch.stack([e.scores for e in out])

    assert torch.allclose(run(512, 5), run(7, 2), atol=1e-5)


def lime_package_run(model, labels, config):
    """The `lime` backend's explanation, with the perturbations it drew (z, one row per sample) and the
    class-1 probabilities it saw (y), read off the model as it is called."""
    seen = []

    class Spy(MissingnessModel):
        def logits(self, images, rows, visible, seeds=None):
            out = super().logits(images, rows, visible, seeds)
            seen.append((visible.clone(), out.softmax(-1)[:, 1]))
            return out

    features = [Features(labels, int(labels.max()) + 1)]
    (theirs,) = explain("lime", Spy(model, make_fill("black")), torch.ones(1, 1, *labels.shape), features, config,
                        [torch.Generator().manual_seed(5)])
    visible = torch.cat([v for v, _ in seen[1:]])  # the first call is the clean image
    y = torch.cat([p for _, p in seen[1:]]).double()
    z = torch.stack([torch.stack([visible[t][labels == j].all() for j in range(features[0].count)])
                     for t in range(len(visible))])
    return theirs, z.double(), y


def test_lime_package_fits_the_same_model_on_its_own_perturbations(additive):
    """The `lime` backend and our regression agree exactly given lime's perturbations; rankings agree."""
    model, weights = additive
    labels = grid_labels(16, 16, 4)
    config = LimeConfig(samples=400)
    theirs, z, y = lime_package_run(model, labels, config)
    ours = fit_explanation(z, y, config, 1)
    assert torch.allclose(ours.scores, theirs.scores, atol=1e-5)
    (own,) = explain("own", MissingnessModel(model, make_fill("black")), torch.ones(1, 1, 16, 16),
                     [Features(labels, 16)], config, [torch.Generator().manual_seed(5)])
    assert set(own.ranking[:5].tolist()) == set(theirs.ranking[:5].tolist())  # different draws, same top-5


def test_lime_package_uses_the_ridge_alpha_asked_for(additive):
    """`--backend lime --ridge-alpha A` fits Ridge(A) on lime's perturbations, not lime's default α = 1."""
    model, _ = additive
    config = LimeConfig(samples=200, ridge_alpha=30.0)
    theirs, z, y = lime_package_run(model, grid_labels(16, 16, 4), config)
    assert torch.allclose(fit_explanation(z, y, config, 1).scores, theirs.scores, atol=1e-5)
    default = fit_explanation(z, y, LimeConfig(samples=200), 1).scores
    assert not torch.allclose(default, theirs.scores, atol=1e-3)


def test_perturbations_include_the_original_by_default():
    z = perturbations(10, LimeConfig(samples=20), torch.Generator().manual_seed(0))
    assert z.shape == (20, 10) and (z[0] == 1).all()
    z = perturbations(10, LimeConfig(samples=2000, include_original=False), torch.Generator().manual_seed(0))
    assert set(z.unique().tolist()) == {0.0, 1.0} and abs(float(z.mean()) - 0.5) < 0.02
    with pytest.raises(Exception, match="target"):
        LimeConfig(target="margin")
