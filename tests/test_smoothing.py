"""Derandomized smoothing invariants (spec certify §4.1)."""

import itertools

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.dataset import ImageDataset
from confidently.data.loader import collect
from confidently.errors import UsageError
from confidently.models import create_model
from confidently.models.classifier import Classifier
from confidently.smoothing import (
    Ablation,
    ablation_votes,
    certify_counts,
    max_certified_patch,
    smoothed_prediction,
    vote_counts,
)
from confidently.training import TrainConfig, train_classifier
from torch import nn


@pytest.mark.parametrize(("width", "size", "stride"), [(16, 4, 1), (16, 3, 2), (15, 4, 4), (8, 8, 1)])
def test_column_sets(width, size, stride):
    ablation = Ablation("column", size, stride)
    masks = ablation.masks(6, width)
    assert len(masks) == ablation.count(6, width) == -(-width // stride)
    assert (masks.sum(dim=(1, 2)) == min(size, width) * 6).all()
    if stride == 1:
        assert (masks[:, 0, :].sum(0) == min(size, width)).all()  # each column kept by exactly b ablations


def test_block_and_both_sets():
    block = Ablation("block", 3, 2)
    masks = block.masks(8, 10)
    assert len(masks) == 4 * 5 and (masks.sum(dim=(1, 2)) == 9).all()
    both = Ablation("both", 2, 1)
    assert len(both.masks(5, 7)) == both.count(5, 7) == 12


def test_a_registered_ablation_kind_is_usable_at_once():
    """Registering is all it takes: the kind validates, masks, counts and has Δ (rows and blocks here)."""
    from confidently.smoothing import ABLATION_PARTS, list_ablations, register_ablation

    register_ablation("row-or-block", ("rows",), ("rows", "cols"))
    try:
        kind = Ablation("row-or-block", 2, 1)
        assert "row-or-block" in list_ablations()
        assert len(kind.masks(4, 6)) == kind.count(4, 6) == 4 + 4 * 6
        rows, block = Ablation("row", 2, 1), Ablation("block", 2, 1)
        assert kind.delta(4, 6, 1) == rows.delta(4, 6, 1) + block.delta(4, 6, 1)
        with pytest.raises(UsageError, match="row-or-block"):
            Ablation("diagonal")
        with pytest.raises(UsageError, match="rows"):
            register_ablation("bad", ("diagonals",))
    finally:
        ABLATION_PARTS._items.pop("row-or-block")


def test_delta_closed_forms_and_the_strided_counterexample():
    for b, m in itertools.product((1, 4, 19), (1, 5, 32)):
        assert Ablation("column", b, 1).delta(224, 224, m) == min(224, m + b - 1)
    assert Ablation("column", 4, 4).delta(32, 32, 5) == Ablation("column", 4, 4).delta(32, 32, 5, exact=False)
    counter = Ablation("column", 19, 10)
    assert counter.delta(224, 224, 32) == 6 and counter.delta(224, 224, 32, exact=False) == 5
    for b, s, m in itertools.product((3, 19, 37), (1, 5, 10), (2, 23, 39)):
        ablation = Ablation("column", b, s)
        assert ablation.delta(224, 224, m) >= ablation.delta(224, 224, m, exact=False)
    deltas = [counter.delta(224, 224, m) for m in range(1, 60)]
    assert deltas == sorted(deltas)
    assert Ablation("block", 4, 2).delta(16, 16, 3) == Ablation("column", 4, 2).delta(16, 16, 3) ** 2
    assert Ablation("both", 4, 1).delta(16, 12, 3) == Ablation("row", 4, 1).delta(16, 12, 3) + Ablation(
        "column", 4, 1).delta(16, 12, 3)


@pytest.mark.parametrize("ablation", [Ablation("column", 3, 2), Ablation("block", 3, 3), Ablation("both", 2, 3),
                                      Ablation("row", 5, 1)])
@pytest.mark.parametrize("patch", [1, 2, 4])
def test_delta_is_the_most_ablations_a_real_patch_touches(ablation, patch):
    height, width = 11, 13
    masks = ablation.masks(height, width)
    touched = [int(masks[:, r:r + patch, c:c + patch].flatten(1).any(1).sum())
               for r in range(height - patch + 1) for c in range(width - patch + 1)]
    assert max(touched) == ablation.delta(height, width, patch)


def test_ties_and_rules():
    counts = torch.tensor([[5, 5, 0], [0, 4, 4], [7, 3, 0], [3, 7, 1]])
    assert smoothed_prediction(counts).tolist() == [0, 1, 0, 1]
    _, strict = certify_counts(counts, 0, "strict")
    assert strict.tolist() == [False, False, True, True]
    _, index = certify_counts(counts, 0, "index")
    assert index.tolist() == [True, True, True, True]  # a tie certifies against larger indices only
    _, index = certify_counts(torch.tensor([[4, 6, 0]]), 1, "index")
    assert index.tolist() == [False]
    _, index = certify_counts(torch.tensor([[6, 4, 0]]), 1, "index")  # gap == 2Δ, runner-up has a larger index
    assert index.tolist() == [True]
    with pytest.raises(UsageError):
        certify_counts(counts, 0, "loose")


def test_certified_counts_survive_every_oracle_flip():
    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 40, (300, 4), generator=gen)
    for delta in (0, 1, 3, 6):
        pred, certified = certify_counts(counts, delta)
        for i in torch.nonzero(certified).flatten().tolist():
            for other in range(4):
                if other == pred[i]:
                    continue
                attacked = counts[i].clone()
                moved = min(delta, int(attacked[pred[i]]))
                attacked[pred[i]] -= moved
                attacked[other] += delta  # Δ ablations can each vote for `other` instead
                assert smoothed_prediction(attacked[None])[0] == pred[i]
        # tightness: an uncertified strict winner can be flipped or tied by moving Δ votes
        for i in torch.nonzero(~certified).flatten().tolist()[:20]:
            runner = torch.tensor([c for c in range(4) if c != pred[i]])[counts[i][[c for c in range(4)
                                                                                    if c != pred[i]]].argmax()]
            attacked = counts[i].clone()
            moved = min(delta, int(attacked[pred[i]]))
            attacked[pred[i]] -= moved
            attacked[runner] += moved + (delta - moved)
            assert attacked[runner] >= attacked[pred[i]]


class Constant(nn.Module):
    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, 2] = 1
        return out


def test_a_constant_classifier_is_certified_everywhere():
    model = Classifier(Constant(), arch="constant", arch_kwargs={}, num_classes=3, input_size=(3, 8, 8),
                       mean=(0.0,) * 3, std=(1.0,) * 3)
    ablation = Ablation("column", 2, 1)
    counts = vote_counts(ablation_votes(model, torch.rand(4, 3, 8, 8), ablation), 3)
    assert counts[:, 2].tolist() == [8] * 4
    pred, certified = certify_counts(counts, ablation.delta(8, 8, 2))
    assert pred.tolist() == [2] * 4 and certified.all()


def test_vit_votes_with_dropped_tokens_ignore_everything_outside_the_band():
    torch.manual_seed(0)
    vit = create_model("tiny_vit", 10).eval()
    images = torch.rand(3, 3, 32, 32)
    ablation = Ablation("column", 6, 4)
    votes = ablation_votes(vit, images, ablation, drop_tokens=True, batch_size=16)
    assert votes.shape == (3, 8)
    changed = images.clone()
    changed[:, :, :, 16:] = torch.rand(3, 3, 32, 16)  # columns 16..31 only
    again = ablation_votes(vit, changed, ablation, drop_tokens=True, batch_size=7)
    untouched = [i for i, mask in enumerate(ablation.masks(32, 32)) if not mask[:, 16:].any()]
    assert untouched and torch.equal(votes[:, untouched], again[:, untouched])
    zero_filled = ablation_votes(vit, images, ablation, drop_tokens=False, batch_size=16)
    assert zero_filled.shape == votes.shape


@pytest.fixture(scope="module")
def column_model():
    """A small CNN trained on random column ablations (b = 3) of 8×8 digits."""
    data = open_dataset("demo:digits?size=8", "train")
    images, labels = collect(data)
    masks = Ablation("column", 3, 1).masks(8, 8)

    def ablate(model, x, y, generators):  # one generator per image, seeded by its record
        choice = torch.cat([torch.randint(0, len(masks), (1,), generator=g) for g in generators])
        return x * masks[choice][:, None]

    torch.manual_seed(0)
    model = create_model("small_cnn", 10)
    train_set = ImageDataset.from_tensors(images, labels)
    train_classifier(model, train_set, TrainConfig(epochs=12, lr=3e-3, batch_size=64), perturb=ablate)
    return model


def test_certified_images_survive_real_patches_everywhere(column_model):
    """End-to-end soundness: every placement and content of a 1×1 and 2×2 patch keeps a certified prediction."""
    test = open_dataset("demo:digits?size=8", "test")
    images, labels = collect(test)
    images, labels = images[:40], labels[:40]
    ablation = Ablation("column", 3, 1)
    counts = vote_counts(ablation_votes(column_model, images, ablation), 10)
    sizes = max_certified_patch(counts, ablation, 8, 8)
    assert (sizes > 0).sum() >= 5  # something to check
    noise = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(1))
    contents = [torch.zeros(3, 2, 2), torch.ones(3, 2, 2), noise]
    for patch in (1, 2):
        pred, certified = certify_counts(counts, ablation.delta(8, 8, patch))
        chosen = torch.nonzero(certified).flatten()
        for r, c in itertools.product(range(9 - patch), range(9 - patch)):
            for content in contents:
                attacked = images[chosen].clone()
                attacked[:, :, r:r + patch, c:c + patch] = content[:, :patch, :patch]
                new = vote_counts(ablation_votes(column_model, attacked, ablation), 10)
                assert torch.equal(smoothed_prediction(new), pred[chosen])


def test_an_upstream_mask_stays_removed(column_model):
    images = collect(open_dataset("demo:digits?size=8", "test"))[0][:6]
    ablation = Ablation("column", 3, 1)
    all_visible = torch.ones(6, 8, 8)
    assert torch.equal(ablation_votes(column_model, images, ablation, visible=all_visible),
                       ablation_votes(column_model, images, ablation))
    hidden = torch.ones(6, 8, 8)
    hidden[:, :4] = 0  # the top half was removed upstream: its pixels cannot matter
    changed = images.clone()
    changed[:, :, :4] = torch.rand(6, 3, 4, 8)
    assert torch.equal(ablation_votes(column_model, images, ablation, visible=hidden),
                       ablation_votes(column_model, changed, ablation, visible=hidden))


def test_restride_selects_the_coarser_set_and_huge_sets_are_refused():
    for kind in ("column", "block", "both"):
        fine = Ablation(kind, 4, 2)
        coarse, keep = fine.restride(12, 16, 4)
        assert torch.equal(fine.masks(12, 16)[keep], coarse.masks(12, 16))
    with pytest.raises(UsageError, match="multiple"):
        Ablation("column", 4, 2).restride(12, 16, 3)
    with pytest.raises(UsageError, match="--allow-huge"):
        Ablation("block", 19, 1).check(224, 224, [32])
    Ablation("block", 19, 1).check(224, 224, [32], max_ablations=None)


def test_patch_attack_finds_no_flip_on_certified_images_and_finds_some_elsewhere(column_model):
    from confidently.smoothing import patch_attack, patch_contents

    images, labels = collect(open_dataset("demo:digits?size=8", "test"))
    images, labels = images[:30], labels[:30]
    ablation = Ablation("column", 3, 1)
    votes = ablation_votes(column_model, images, ablation)
    counts = vote_counts(votes, 10)
    _, certified = certify_counts(counts, ablation.delta(8, 8, 2))
    fillers = patch_contents(["zeros", "ones", "noise", "swap"], 2, 3, torch.Generator().manual_seed(0), images[0])
    assert set(fillers) == {"zeros", "ones", "noise", "swap"}
    for i in torch.nonzero(certified).flatten().tolist():
        assert patch_attack(column_model, images[i], votes[i], ablation, 2, fillers) == []
    found = sum(bool(patch_attack(column_model, images[i], votes[i], ablation, 5, patch_contents(
        ["zeros", "ones"], 5, 3, torch.Generator().manual_seed(0)))) for i in torch.nonzero(~certified).flatten()[:8])
    assert found > 0  # the harness does detect flips where nothing is certified


def test_vit_votes_without_an_upstream_mask_never_pad(monkeypatch):
    """An all-ones mask is no mask: every forward keeps one token count (no padding, no attention mask)."""
    import confidently.smoothing.ablation as smoothing

    torch.manual_seed(0)
    vit = create_model("tiny_vit", 10).eval()
    calls = []
    real = smoothing.vit_forward_kept

    def spy(net, x, keep, **kwargs):
        calls.append(set(keep.sum(1).tolist()))
        return real(net, x, keep, **kwargs)

    monkeypatch.setattr(smoothing, "vit_forward_kept", spy)
    images = torch.rand(3, 3, 32, 32)
    ablation = Ablation("column", 6, 1)  # keeps 2 or 3 token columns, by start
    visible = torch.ones(3, 32, 32)
    plain = ablation_votes(vit, images, ablation, drop_tokens=True, batch_size=30, visible=visible)
    assert calls and all(len(counts) == 1 for counts in calls)
    visible[1, :, :16] = 0  # only image 1 was masked upstream
    calls.clear()
    mixed = ablation_votes(vit, images, ablation, drop_tokens=True, batch_size=30, visible=visible)
    assert torch.equal(mixed[[0, 2]], plain[[0, 2]])
    assert any(len(counts) > 1 for counts in calls)  # the masked image does pad


class LeftHalf(nn.Module):
    """Class 1 scores the pixels of the left half, class 0 a constant: votes tell whether it is visible."""

    def forward(self, x):
        return torch.stack([torch.full((len(x),), 0.5), x[:, :, :, :4].sum((1, 2, 3))], dim=1)


def test_patch_attack_reruns_touched_ablations_with_the_upstream_mask():
    """A patch inside a region removed upstream changes nothing, so it must never report a flip."""
    from confidently.smoothing import patch_attack, patch_contents

    model = Classifier(LeftHalf(), arch="left-half", arch_kwargs={}, num_classes=2, input_size=(1, 8, 8),
                       mean=(0.0,), std=(1.0,))
    image = torch.ones(1, 8, 8)
    visible = torch.ones(8, 8)
    visible[:, :4] = 0  # the left half was removed upstream
    ablation = Ablation("column", 2, 1)
    votes = ablation_votes(model, image[None], ablation, visible=visible[None])[0]
    assert votes.tolist() == [0] * 8
    fillers = patch_contents(["zeros", "ones"], 4, 1, torch.Generator().manual_seed(0))
    assert patch_attack(model, image, votes, ablation, 4, fillers, [(0, 0), (4, 0)], visible=visible) == []
    assert patch_attack(model, image, votes, ablation, 4, fillers, [(0, 0)])  # without the mask it "flips"


def test_patch_side_for_a_fraction_rounds_up_in_exact_arithmetic():
    from confidently.smoothing import patch_side_for_fraction

    assert [patch_side_for_fraction(f, 224, 224) for f in (0.01, 0.02, 0.03)] == [23, 32, 39]  # thesis's 1/2/3 %
    assert patch_side_for_fraction(0.0025, 280, 280) == 14  # float: ceil(sqrt(0.0025) * 280) = 15
    assert patch_side_for_fraction(0.0064, 350, 350) == 28
    for f, h, w in itertools.product((0.001, 0.013, 0.02, 0.25), (32, 224), (32, 100)):
        m = patch_side_for_fraction(f, h, w)
        assert (m - 1) ** 2 < f * h * w <= m**2 + 1e-9  # the smallest square covering f of the image


def test_default_ablation_size_scales_the_thesis_band():
    from confidently.smoothing import default_ablation_size

    assert default_ablation_size("column", 224, 224) == 19 and default_ablation_size("column", 32, 32) == 4
    assert default_ablation_size("row", 448, 32) == 38 and default_ablation_size("column", 8, 8) == 1
    with pytest.raises(UsageError, match="--ablation-size"):
        default_ablation_size("block", 224, 224)
