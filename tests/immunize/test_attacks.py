"""PGD immunization on the tiny random LDM (spec §4 properties 1–8)."""

from __future__ import annotations

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import (
    METHODS,
    PRESETS,
    EditConfig,
    EncoderAttack,
    PGDConfig,
    Request,
    conditioning,
    edit_forward,
    edit_image,
    immunize,
    parse_fraction,
    pgd,
    quantize_within_bound,
    save_uint8,
)
from confidently.io.images import load_image

from tests.immunize.conftest import blobs, centre_mask

EPS = 16 / 255


def request(ldm, x, mask=None, key="a", **kwargs):
    mode = ldm.mode
    cond = conditioning(ldm.text, "", "") if ldm.unet is not None else None
    defaults = {"cond": cond, "edit": EditConfig(mode, steps=2), "noise": "fixed", "seed": 1}
    return Request(x=x, mask=mask, mode=mode, key=key, **{**defaults, **kwargs})


def region_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """MSE over the regenerated region only (paste-back makes the kept region carry δ itself)."""
    keep = mask[0, 0] > 0.5
    return float((a - b)[:, keep].pow(2).mean())


@pytest.mark.parametrize("method,norm", [("encoder", "linf"), ("diffusion", "linf"), ("random", "linf"),
                                         ("encoder", "l2")])
def test_bound_and_range_also_in_the_saved_png(ldm_img2img, tmp_path, method, norm):
    ldm = ldm_img2img
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    x[:, :, :4] = 0.0  # pixels at the range ends: the [0, 1] clip must hold
    x[:, :, -4:] = 1.0
    eps = EPS if norm == "linf" else 1.0
    config = PGDConfig(eps=eps, step=4 / 255 if norm == "linf" else 0.5, steps=6, norm=norm, random_start=True)
    result = immunize(ldm, request(ldm, x), method, config)
    delta = result.x_adv - x
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    if norm == "linf":
        assert float(delta.abs().max()) <= EPS + 1e-6
        assert float(delta.abs().max()) > EPS / 2  # the attack did use its budget
    else:
        assert float(delta.norm()) <= eps + 1e-5
    x_u8, adv_u8 = quantize_within_bound(result.x_adv[0], x[0], eps, norm=norm)
    save_uint8(x_u8, tmp_path / "x.png")
    save_uint8(adv_u8, tmp_path / "adv.png")
    png_x, png_adv = (load_image(str(tmp_path / name)) for name in ("x.png", "adv.png"))
    diff = (png_adv * 255).round() - (png_x * 255).round()
    if norm == "linf":
        assert float(diff.abs().max()) <= round(255 * EPS)
    else:
        assert float(diff.norm()) <= 255 * eps + 1e-3


def test_quantisation_reprojects_off_grid_originals():
    """An original between grid points: rounding both could give 17/255; the file keeps 16/255."""
    x = torch.full((3, 4, 4), 100.4 / 255)
    x_adv = (x + EPS).clamp(0, 1)  # 116.4 → rounds to 116, original to 100: 16 — then push the other way
    x_adv[0] = x[0] - EPS  # 84.4 → 84 vs 100: 16
    x_adv[1] = torch.full((4, 4), 116.6 / 255)  # rounds to 117: 17 units, re-projected to 116
    q_x, q_adv = quantize_within_bound(x_adv, x, EPS)
    assert int((q_adv.int() - q_x.int()).abs().max()) == 16
    keep = torch.zeros(1, 4, 4)
    keep[..., :2] = 1
    _, q_masked = quantize_within_bound(x_adv, x, EPS, keep)
    assert torch.equal(q_masked[..., 2:], q_x[..., 2:])


@pytest.mark.parametrize("method", ["encoder", "diffusion", "random"])
def test_zero_budget_or_zero_steps_is_the_identity(ldm_img2img, tmp_path, method):
    ldm = ldm_img2img
    x = blobs(1, seed=5)
    for config in (PGDConfig(eps=0.0, steps=3), PGDConfig(steps=0)):
        if method == "random" and config.steps == 0:
            continue  # the baseline has no steps; eps = 0 is its identity
        result = immunize(ldm, request(ldm, x), method, config)
        assert torch.allclose(result.x_adv, x)
        x_u8, adv_u8 = quantize_within_bound(result.x_adv[0], x[0], config.eps)
        save_uint8(x_u8, tmp_path / "x.png")
        save_uint8(adv_u8, tmp_path / "adv.png")
        assert (tmp_path / "x.png").read_bytes() == (tmp_path / "adv.png").read_bytes()


@pytest.mark.parametrize("method", ["encoder", "diffusion", "random"])
def test_regenerated_region_is_never_perturbed(ldm, method):
    x, mask = blobs(1, seed=2), centre_mask()
    result = immunize(ldm, request(ldm, x, mask), method, PGDConfig(steps=4, random_start=True))
    delta = result.x_adv - x
    assert float(delta[..., mask[0, 0] > 0.5].abs().max()) == 0.0
    assert float(delta[..., mask[0, 0] < 0.5].abs().max()) > 0


def test_projection_is_onto_the_ball_not_an_accumulated_delta():
    """Minimising ‖x − c‖² with c far away lands exactly on Π(c): clip to x0 ± ε, then to [0, 1].

    The thesis pseudo-code (x ← x − δ every iteration with a running δ) would walk out of the ball."""
    x0 = torch.tensor([[[[0.5, 0.02, 0.98, 0.3]]]])
    c = torch.tensor([[[[2.0, -3.0, 5.0, 0.31]]]])
    result = pgd(x0, lambda x, n, r: (x - c).pow(2).sum(), PGDConfig(eps=0.1, step=0.03, steps=50))
    assert torch.allclose(result.x_adv, torch.tensor([[[[0.6, 0.0, 1.0, 0.31]]]]), atol=0.031)
    assert float((result.x_adv - x0).abs().max()) <= 0.1 + 1e-6
    assert result.losses[-1] < result.losses[0]


def test_encoder_attack_drives_the_latent_to_the_target(ldm):
    """Property 4: ‖E(x_adv) − z_t‖² ≤ 0.5·‖E(x) − z_t‖² and ≤ 0.5× the random baseline (50 steps)."""
    for index, x in enumerate(blobs(2, seed=11).split(1)):
        req = request(ldm, x, key=str(index))
        attacked = immunize(ldm, req, "encoder", PGDConfig(steps=50))
        noisy = immunize(ldm, req, "random", PGDConfig())
        loss, _ = EncoderAttack().objective(ldm, req)
        clean, adv, rand = float(loss(x)), attacked.loss_final, float(loss(noisy.x_adv))
        assert adv <= 0.5 * clean and adv <= 0.5 * rand, (clean, adv, rand)
        assert attacked.loss_init == pytest.approx(clean)


def test_losses_go_down_for_both_attacks(ldm):
    """Property 5 (diffusion with fixed noise and grad_reps 1: a deterministic objective)."""
    x, mask = blobs(1, seed=4), centre_mask()
    for method, steps in (("encoder", 20), ("diffusion", 6)):
        result = immunize(ldm, request(ldm, x, mask), method, PGDConfig(steps=steps))
        assert result.loss_final <= result.loss_init
        assert len(result.losses) == steps


def test_determinism_of_attacks_and_edits(ldm):
    """Property 6: same seed → identical immunized pixels and identical edits (MSE exactly 0)."""
    x, mask = blobs(1, seed=6), centre_mask()
    config = PGDConfig(steps=3, random_start=True)
    first = immunize(ldm, request(ldm, x, mask, noise="fresh"), "diffusion", config)
    second = immunize(ldm, request(ldm, x, mask, noise="fresh"), "diffusion", config)
    assert torch.equal(first.x_adv, second.x_adv)
    other = immunize(ldm, request(ldm, x, mask, seed=2), "diffusion", config)
    assert not torch.equal(first.x_adv, other.x_adv)
    cond = conditioning(ldm.text, "a red car", "")
    edit = EditConfig("inpaint", steps=5)
    a, b = (edit_image(ldm, x[0], cond, edit, seed=9, mask=mask[0]) for _ in range(2))
    assert float((a - b).pow(2).mean()) == 0.0
    assert not torch.equal(a, edit_image(ldm, x[0], cond, edit, seed=10, mask=mask[0]))


def test_edits_of_immunized_images_diverge_more_than_noise(ldm):
    """Property 7: MSE(edit(x_attack), edit(x)) ≥ 2 × MSE(edit(x_random), edit(x)), same seed, on the
    regenerated region; tiny random models barely depend on the input, so only ratios are compared."""
    mask, cond = centre_mask(), conditioning(ldm.text, "a red car", "")
    edit = EditConfig("inpaint", steps=4)
    for index, x in enumerate(blobs(2, seed=21).split(1)):
        req = request(ldm, x, mask, key=str(index))
        seed = 100 + index
        clean = edit_image(ldm, x[0], cond, edit, seed=seed, mask=mask[0])
        noise, encoder, diffusion = (
            region_mse(edit_image(ldm, immunize(ldm, req, method, config).x_adv[0], cond, edit, seed, mask[0]),
                       clean, mask)
            for method, config in (("random", PGDConfig()), ("encoder", PGDConfig(steps=50)),
                                   ("diffusion", PGDConfig(steps=10))))
        assert encoder >= 2 * noise and diffusion >= 2 * noise, (encoder, diffusion, noise)


def test_gradient_plumbing_masked_zero_and_checkpointing_exact(ldm):
    """Property 8: the diffusion gradient is 0 inside the regenerated region; checkpointing changes no gradient."""
    x, mask = blobs(1, seed=8), centre_mask()
    cond = conditioning(ldm.text, "", "")
    grads = []
    for checkpointing in (False, True):
        pixels = x.clone().requires_grad_(True)
        config = EditConfig("inpaint", steps=3, checkpointing=checkpointing)
        out = edit_forward(ldm, pixels, cond, config, torch.Generator().manual_seed(0), mask=mask)
        (grad,) = torch.autograd.grad((out - 0).pow(2).sum(), pixels)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-10)
    inside = grads[0][..., mask[0, 0] > 0.5].abs().sum()
    assert float(inside) == 0.0 and float(grads[0].abs().sum()) > 0


def test_img2img_attacks_perturb_everything(ldm_img2img):
    x = blobs(1, seed=12)
    for method, steps in (("encoder", 10), ("diffusion", 3)):
        req = request(ldm_img2img, x, edit=EditConfig("img2img", steps=4, strength=0.5))
        result = immunize(ldm_img2img, req, method, PGDConfig(steps=steps))
        assert result.loss_final <= result.loss_init
        assert float((result.x_adv - x).abs().max()) <= EPS + 1e-6
        assert float((result.x_adv - x).abs().mean()) > EPS / 4


def test_configuration_checks():
    assert set(METHODS.names()) >= {"encoder", "diffusion", "random"}
    assert parse_fraction("16/255") == pytest.approx(16 / 255)
    for bad in ({"eps": -0.1}, {"eps": 1.5}, {"step": 0}, {"step_schedule": "cosine"}, {"norm": "l1"}):
        with pytest.raises(UsageError):
            PGDConfig(**bad)
    with pytest.raises(UsageError):
        parse_fraction("16/0")
    linear = PGDConfig.from_preset("photoguard-demo")
    assert linear.random_start and linear.step_size(0) == pytest.approx(linear.step)
    assert linear.step_size(linear.steps) == pytest.approx(linear.step / 100)
    assert PGDConfig.from_preset("thesis") == PGDConfig()
    assert PRESETS["photoguard-demo"]["eps"] == pytest.approx(0.12 / 2)  # reference ε on [-1, 1], halved


def test_mask_of_the_wrong_size_is_invalid(ldm):
    with pytest.raises(InvalidInput, match="mask"):
        immunize(ldm, request(ldm, blobs(1), torch.zeros(1, 1, 16, 16)), "encoder", PGDConfig(steps=1))
    with pytest.raises(InvalidInput, match="downsampling factor 2"):
        immunize(ldm, request(ldm, torch.rand(1, 3, 31, 32)), "encoder", PGDConfig(steps=1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_autocast_on_cuda_keeps_the_bound_and_lowers_the_loss(tiny_dir, dtype):
    from confidently.immunize import load_ldm

    ldm = load_ldm(tiny_dir, "cuda", dtype)
    x, mask = blobs(1, seed=4).cuda(), centre_mask().cuda()
    for method in ("encoder", "diffusion"):
        result = immunize(ldm, request(ldm, x, mask), method, PGDConfig(steps=10))
        assert float((result.x_adv - x).abs().max()) <= EPS + 1e-6
        assert result.loss_final <= result.loss_init
