import pytest
import torch
from confidently.models import create_model, token_keep_mask, vit_forward_kept, vit_forward_masked


@pytest.fixture(scope="module", params=["token", "avg"])
def vit(request):
    torch.manual_seed(0)
    return create_model("tiny_vit", 10, global_pool=request.param).eval()


def random_keep(batch, tokens, seed, equal=False):
    gen = torch.Generator().manual_seed(seed)
    if equal:
        return torch.stack([torch.randperm(tokens, generator=gen) < 20 for _ in range(batch)])
    keep = torch.rand(batch, tokens, generator=gen) < 0.4
    keep[:, 0] = True
    return keep


@pytest.mark.parametrize("equal", [True, False])
def test_drop_equals_attention_masking(vit, equal):
    x = vit.normalize(torch.rand(6, 3, 32, 32))
    keep = random_keep(6, 64, 1, equal)
    with torch.no_grad():
        dropped = vit_forward_kept(vit.net, x, keep)
        masked = vit_forward_masked(vit.net, x, keep)
    assert (dropped - masked).abs().max() <= 1e-5


def test_all_kept_equals_plain_forward(vit):
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        kept = vit_forward_kept(vit.net, vit.normalize(x), torch.ones(64, dtype=torch.bool))
        assert (kept - vit(x)).abs().max() < 1e-6


def test_output_ignores_pixels_of_dropped_tokens(vit):
    x = torch.rand(2, 3, 32, 32)
    keep = torch.zeros(64, dtype=torch.bool)
    keep[8:24] = True  # token rows 1 and 2: pixel rows 4..11
    y = x.clone()
    y[:, :, 16:, :] = torch.rand(2, 3, 16, 32)  # only pixels of dropped tokens change
    with torch.no_grad():
        assert torch.equal(vit_forward_kept(vit.net, vit.normalize(x), keep),
                           vit_forward_kept(vit.net, vit.normalize(y), keep))


def test_tokens_keep_their_own_positions(vit):
    x = torch.rand(1, 3, 32, 32)
    first = torch.zeros(64, dtype=torch.bool)
    first[:8] = True
    last = torch.zeros(64, dtype=torch.bool)
    last[-8:] = True
    shifted = torch.roll(x, shifts=-28, dims=2)  # the last token row's pixels moved to the first row
    with torch.no_grad():
        a = vit_forward_kept(vit.net, vit.normalize(x), last)
        b = vit_forward_kept(vit.net, vit.normalize(shifted), first)
    assert not torch.allclose(a, b, atol=1e-4)


def test_batched_gather_equals_per_image_loop(vit):
    x = vit.normalize(torch.rand(5, 3, 32, 32))
    keep = random_keep(5, 64, 2)
    with torch.no_grad():
        batched = vit_forward_kept(vit.net, x, keep)
        single = torch.cat([vit_forward_kept(vit.net, x[i:i + 1], keep[i:i + 1]) for i in range(5)])
    assert (batched - single).abs().max() < 1e-5


def test_a_row_with_every_token_dropped_is_finite_and_batch_independent(vit):
    """No evidence gives one defined output (avg pooling: the head on zero features), alone or batched."""
    x = vit.normalize(torch.rand(3, 3, 32, 32))
    keep = torch.ones(3, 64, dtype=torch.bool)
    keep[0] = False
    with torch.no_grad():
        alone = vit_forward_kept(vit.net, x[:1], keep[:1])
        batched = vit_forward_kept(vit.net, x, keep)
        masked = vit_forward_masked(vit.net, x, keep)
    assert torch.isfinite(alone).all() and torch.allclose(alone, batched[:1], atol=1e-5)
    assert torch.allclose(batched, masked, atol=1e-5)
    if vit.net.global_pool == "avg":
        assert torch.allclose(alone[0], vit.net.head(vit.net.fc_norm(torch.zeros(1, vit.net.embed_dim)))[0])


def test_gradients_flow_through_kept_tokens(vit):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    keep = torch.zeros(64, dtype=torch.bool)
    keep[:16] = True
    vit_forward_kept(vit.net, vit.normalize(x), keep).sum().backward()
    assert x.grad[:, :, :8].abs().sum() > 0 and x.grad[:, :, 8:].abs().sum() == 0


def test_keep_rules():
    visible = torch.zeros(1, 8, 8)
    visible[0, 0, 0] = 1  # one pixel of token 0
    visible[0, 4:8, 4:8] = 1  # all of token 3
    assert token_keep_mask(visible, 4, "any").tolist() == [[True, False, False, True]]
    assert token_keep_mask(visible, 4, "all").tolist() == [[False, False, False, True]]
    with pytest.raises(ValueError):
        token_keep_mask(visible, 4, "most")
