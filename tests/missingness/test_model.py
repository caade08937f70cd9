import pytest
import torch
from confidently.errors import UsageError
from confidently.missingness import MissingnessModel, grid_labels, make_fill, visible_after_removal
from confidently.models import token_keep_mask, vit_forward_masked


def random_visible(count: int, seed: int, patch: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if patch is None:  # pixel-level holes: partial tokens
        return torch.rand(count, 32, 32, generator=generator) > 0.1
    flags = torch.rand(count, (32 // patch) ** 2, generator=generator) < 0.3
    return visible_after_removal(grid_labels(32, 32, patch), flags)


def test_drop_needs_a_vit_and_names_the_fills_that_work(resnet):
    with pytest.raises(UsageError, match="black, mean.*blur"):
        MissingnessModel(resnet, make_fill("drop"))


@pytest.mark.parametrize("partial", ["drop", "keep"])
def test_drop_ignores_the_pixels_of_removed_regions(vit, partial):
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    visible = random_visible(6, 2)
    model = MissingnessModel(vit, make_fill("drop"), partial=partial)
    rows = torch.arange(6)
    base = model.logits(images, rows, visible)
    scrambled = torch.where(visible[:, None], images, torch.rand_like(images))
    assert torch.equal(model.logits(scrambled, rows, visible), base)


def test_drop_equals_masked_attention_and_the_plain_forward(vit):
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    visible = random_visible(5, 4, patch=8)  # different kept counts per row
    model = MissingnessModel(vit, make_fill("drop"))
    keep = token_keep_mask(visible, 4, "all")
    with torch.no_grad():
        reference = vit_forward_masked(vit.net, vit.normalize(images), keep)
        plain = vit(images)
    assert torch.allclose(model.logits(images, torch.arange(5), visible), reference, atol=1e-5)
    everything = torch.ones(5, 32, 32, dtype=torch.bool)
    assert torch.allclose(model.logits(images, torch.arange(5), everything), plain, atol=1e-5)


def test_keep_rules_on_random_masks():
    visible = random_visible(8, 5)
    removed = ~visible
    windows = removed.view(8, 8, 4, 8, 4).permute(0, 1, 3, 2, 4).reshape(8, 64, 16)
    dropped = ~token_keep_mask(visible, 4, "all")
    assert torch.equal(dropped, windows.any(-1))  # drop iff any pixel of the window is removed
    assert torch.equal(token_keep_mask(visible, 4, "any"), (~windows).any(-1))  # certify: keep iff any visible
    aligned = random_visible(8, 6, patch=4)  # q = p: both rules remove exactly the removed patches
    assert torch.equal(token_keep_mask(aligned, 4, "all"), token_keep_mask(aligned, 4, "any"))
    coarse = random_visible(8, 7, patch=8)  # removed area ⊇ requested area
    kept = token_keep_mask(coarse, 4, "all").view(8, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2)
    assert not (kept & ~coarse).any()


def test_rows_share_images_and_chunking_does_not_change_logits(resnet):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    visible = random_visible(7, 9)
    big = MissingnessModel(resnet, make_fill("random-noise"), batch_size=64).logits(images, rows, visible,
                                                                                 list(range(7)))
    small = MissingnessModel(resnet, make_fill("random-noise"), batch_size=2).logits(images, rows, visible,
                                                                                  list(range(7)))
    assert torch.allclose(big, small, atol=1e-5)
