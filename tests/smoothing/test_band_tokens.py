"""Band ablations' tokens summed from per-column contributions (certify's fast path) against the convolution."""

import pytest
import torch
from confidently.models import create_model, token_keep_mask, vit_forward_kept
from confidently.smoothing import Ablation, ablation_votes
from confidently.smoothing.band_tokens import BAND_AXES, BandTokens, band_axes, supports_band_tokens


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("tiny_vit", 10).eval()


@pytest.mark.parametrize(("kind", "size"), [("column", 6), ("row", 5), ("both", 8), ("column", 30)])
def test_band_tokens_give_the_convolution_s_logits_and_keep_sets(vit, kind, size):
    """b = 30 of 32 wraps inside one token (two visible runs in a window); rows and columns mixed in `both`."""
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = Ablation(kind, size, 1).masks(32, 32)
    axes = band_axes(masks)
    assert axes is not None and supports_band_tokens(vit.net, 32, 32)
    band = BandTokens(vit, images)
    with torch.no_grad():
        for index in range(len(masks)):
            mask = masks[index:index + 1]
            tokens, keep = band(mask, BAND_AXES[int(axes[index])])
            expected_keep = token_keep_mask(mask, 4, "any")
            assert torch.equal(keep, expected_keep)
            blanked = vit.normalize(images * mask[:, None])
            reference = vit_forward_kept(vit.net, blanked, expected_keep)
            fast = vit_forward_kept(vit.net, None, keep.expand(3, -1), tokens=tokens)
            assert (fast - reference).abs().max() < 1e-5


def test_votes_equal_the_convolution_path_and_blocks_take_it(vit, monkeypatch):
    import confidently.smoothing.ablation as smoothing

    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    fast = {kind: ablation_votes(vit, images, Ablation(kind, 6, 1), drop_tokens=True, batch_size=40)
            for kind in ("column", "both")}
    monkeypatch.setattr(smoothing, "supports_band_tokens", lambda *args: False)
    for kind, votes in fast.items():
        assert torch.equal(votes, ablation_votes(vit, images, Ablation(kind, 6, 1), drop_tokens=True, batch_size=40))
    assert band_axes(Ablation("block", 6, 2).masks(32, 32)) is None  # blocks: the convolution per ablation
    masked = Ablation("column", 6, 1).masks(32, 32) & (torch.rand(32, 32) > 0.5)
    assert band_axes(masked) is None  # an upstream mask: rows differ


def test_a_timm_vit_at_224_matches_the_convolution(monkeypatch):
    """vit_tiny_patch16_224 at the thesis's b = 19: the benchmark's geometry, votes identical."""
    import confidently.smoothing.ablation as smoothing

    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", 10, img_size=224).eval()
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    ablation = Ablation("column", 19, 16)  # 14 starts, with and without wrap, 28 and 42 tokens
    fast = ablation_votes(model, images, ablation, batch_size=64)
    monkeypatch.setattr(smoothing, "supports_band_tokens", lambda *args: False)
    assert torch.equal(fast, ablation_votes(model, images, ablation, batch_size=64))
