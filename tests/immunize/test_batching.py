"""--batch-size: a batch of photos is B independent attacks (issue 21).

Each photo's immunization must not depend on its batch: per-photo loss (summed, so each gradient is the
solo one), per-photo step and projection, random start and diffusion noise from the photo's own (seed, id).
Batched CPU kernels round differently from single-photo ones (losses agree to ~1e-5 relative): ℓ∞ sign
steps come out identical on these inputs, ℓ2 steps within 1e-6.
"""

from __future__ import annotations

import pytest
import torch
from confidently.immunize import EditConfig, PGDConfig, Request, batchable, conditioning, immunize, immunize_batch, pgd

from tests.immunize.conftest import blobs, centre_mask

TOLERANCE = 1e-6


def requests(ldm, count=3, mask=None, size=32, seed=1, noise="fresh", first_key=0):
    cond = conditioning(ldm.text, "", "")
    return [Request(x=x, mask=mask, mode=ldm.mode, key=f"photo/{first_key + i}", seed=7, cond=cond,
                    edit=EditConfig(ldm.mode, steps=2), noise=noise)
            for i, x in enumerate(blobs(count, size=size, seed=seed).split(1))]


def assert_same(solo, batched, tolerance=TOLERANCE):
    assert len(solo) == len(batched)
    for a, b in zip(solo, batched, strict=True):
        assert float((a.x_adv - b.x_adv).abs().max()) <= tolerance
        for value, other in ((a.loss_init, b.loss_init), (a.loss_final, b.loss_final)):
            assert (value is None and other is None) or value == pytest.approx(other, rel=1e-4, abs=1e-6)
        assert a.losses == pytest.approx(b.losses, rel=1e-4, abs=1e-6)
        assert set(a.tensors) == set(b.tensors)


@pytest.mark.parametrize("model", ["ldm", "ldm_img2img"])
@pytest.mark.parametrize("method,config", [
    ("encoder", PGDConfig(steps=8, random_start=True)),
    ("encoder", PGDConfig(eps=1.0, step=0.2, steps=5, norm="l2", random_start=True)),
    ("diffusion", PGDConfig(steps=3, random_start=True, grad_reps=2)),
    ("random", PGDConfig()),
], ids=["encoder-linf", "encoder-l2", "diffusion-fresh-eot", "random"])
def test_a_batch_gives_each_photo_its_solo_result(request, model, method, config):
    ldm = request.getfixturevalue(model)
    mask = centre_mask() if ldm.mode == "inpaint" else None
    batch = requests(ldm, mask=mask)
    solo = [immunize(ldm, r, method, config) for r in batch]
    together = immunize_batch(ldm, batch, method, config)
    assert_same(solo, together)
    assert not torch.equal(together[0].x_adv - together[0].x, together[1].x_adv - together[1].x)  # own draws


def test_per_photo_masks_and_progress_in_a_batch(ldm):
    """Different masks in one batch: each perturbation stays in its own kept region; on_step gets each loss."""
    masks = [centre_mask(), torch.zeros(1, 1, 32, 32), 1 - centre_mask()]
    batch = [Request(x=x, mask=m, mode="inpaint", key=str(i), seed=3)
             for i, (x, m) in enumerate(zip(blobs(3, seed=5).split(1), masks, strict=True))]
    seen = []
    together = immunize_batch(ldm, batch, "encoder", PGDConfig(steps=4),
                              on_step=lambda n, losses: seen.append((n, losses)))
    assert_same([immunize(ldm, r, "encoder", PGDConfig(steps=4)) for r in batch], together)
    for result, mask in zip(together, masks, strict=True):
        assert float((result.x_adv - result.x)[..., mask[0, 0] > 0.5].abs().sum()) == 0.0
    assert [n for n, _ in seen] == [0, 1, 2, 3] and all(len(losses) == 3 for _, losses in seen)
    assert [losses[1] for _, losses in seen] == [r.losses for r in together][1]


def test_only_compatible_requests_share_a_batch(ldm, ldm_img2img):
    small, large = requests(ldm_img2img, 1, size=16)[0], requests(ldm_img2img, 1)[0]
    assert batchable(large, requests(ldm_img2img, 1, seed=9)[0])
    assert not batchable(small, large)
    assert not batchable(large, requests(ldm_img2img, 1, noise="fixed")[0])
    other_prompt = Request(x=large.x, mode=large.mode, cond=conditioning(ldm_img2img.text, "a red car", ""),
                           edit=large.edit)
    assert not batchable(large, other_prompt)
    with pytest.raises(ValueError, match="cannot share a batch"):
        immunize_batch(ldm_img2img, [large, small], "encoder", PGDConfig(steps=1))


def test_pgd_wants_one_loss_per_photo_of_a_batch():
    x0 = torch.full((2, 1, 1, 3), 0.5)
    with pytest.raises(ValueError, match="one per photo"):
        pgd(x0, lambda x, n, r: x.sum(), PGDConfig(steps=1))
    result = pgd(x0, lambda x, n, r: (x - 1).pow(2).flatten(1).sum(1), PGDConfig(eps=0.1, step=0.05, steps=2))
    assert len(result.photo_losses) == 2 and result.losses[0] == pytest.approx(sum(p[0] for p in result.photo_losses))
