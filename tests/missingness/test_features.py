import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.missingness import (
    from_label_map,
    grid_labels,
    make_features,
    removal_flags,
    visible_after_removal,
)


def test_grid_ids_are_row_major_and_ragged_needs_a_flag():
    labels = grid_labels(8, 12, 4)
    assert labels.max() == 5 and labels[0, 4] == 1 and labels[4, 0] == 3
    assert torch.bincount(labels.flatten()).tolist() == [16] * 6
    with pytest.raises(UsageError, match="does not divide"):
        grid_labels(32, 32, 5)
    ragged = grid_labels(10, 10, 4, ragged=True)
    assert ragged.max() == 8 and int((ragged == 8).sum()) == 4  # 2×2 corner


@pytest.mark.parametrize("k", [0, 1, 7, 64])
def test_masks_remove_exactly_k_units(k):
    labels = grid_labels(32, 32, 4)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(k))
    flags = removal_flags(order, [k], 64)
    visible = visible_after_removal(labels, flags)[0]
    assert int((~visible).sum()) == k * 16
    removed_ids = set(labels[~visible].unique().tolist())
    assert removed_ids == set(order[:k].tolist())
    kept = visible_after_removal(labels, removal_flags(order, [k], 64, keep_top=True))[0]
    assert torch.equal(kept, ~visible)


def test_per_image_label_maps_match_the_shared_one():
    labels = grid_labels(16, 16, 4)
    flags = torch.rand(5, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(visible_after_removal(labels, flags), visible_after_removal(labels.expand(5, 16, 16), flags))


def test_superpixels_cover_the_image_with_contiguous_ids():
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))
    features = make_features("superpixel", image, segments=20)
    assert features.labels.min() == 0 and features.labels.max() == features.count - 1
    assert (features.sizes() > 0).all() and int(features.sizes().sum()) == 48 * 48


def test_boxes_smaller_box_wins_and_outside_is_never_removed():
    image = torch.zeros(3, 10, 10)
    features = make_features("boxes", image, boxes=[[0, 0, 10, 10], [2, 2, 4, 4]])
    assert features.count == 2 and features.labels[3, 3] == 1 and features.labels[8, 8] == 0
    partial = make_features("boxes", image, boxes=[[0, 0, 5, 5]])
    visible = visible_after_removal(partial.labels, torch.ones(1, 1, dtype=torch.bool))[0]
    assert int((~visible).sum()) == 25 and visible[7, 7]
    with pytest.raises(InvalidInput, match="boxes"):
        make_features("boxes", image, boxes=None)
    with pytest.raises(InvalidInput, match="empty"):
        make_features("boxes", image, boxes=[[5, 5, 5, 9]])


def test_user_label_maps_are_relabelled():
    features = from_label_map(torch.tensor([[7, 7, -1], [3, 3, 9]]))
    assert features.count == 3 and features.labels.tolist() == [[1, 1, -1], [0, 0, 2]]
