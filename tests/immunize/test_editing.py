"""The editing loop and pixel handling (spec §2.6, §3.2)."""

from __future__ import annotations

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import EditConfig, check_output_format, conditioning, edit_image, fit_image

from tests.immunize.conftest import blobs, centre_mask


def test_inpaint_edit_keeps_the_kept_region_and_needs_a_mask(ldm):
    x, mask = blobs(1, seed=1)[0], centre_mask()[0]
    cond = conditioning(ldm.text, "a red car", "")
    out = edit_image(ldm, x, cond, EditConfig("inpaint", steps=3), seed=0, mask=mask)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    kept = mask[0] < 0.5
    assert torch.equal(out[:, kept], x[:, kept])
    assert not torch.equal(out[:, ~kept], x[:, ~kept])
    raw = edit_image(ldm, x, cond, EditConfig("inpaint", steps=3), seed=0, mask=mask, paste=False)
    assert not torch.equal(raw[:, kept], x[:, kept])
    with pytest.raises(InvalidInput, match="mask"):
        edit_image(ldm, x, cond, EditConfig("inpaint", steps=3), seed=0)


def test_inpaint_edit_of_a_copy_pastes_the_original_photo_back(ldm):
    """PhotoGuard's recover_image(edit, init_image, mask): the kept region shows the photo, not the copy's noise."""
    x, mask = blobs(1, seed=1)[0], centre_mask()[0]
    copy = (x + 0.05 * torch.sign(0.5 - x)).clamp(0, 1)  # an "immunized" copy: differs from x everywhere
    cond, config = conditioning(ldm.text, "a red car", ""), EditConfig("inpaint", steps=2)
    out = edit_image(ldm, copy, cond, config, seed=0, mask=mask, original=x)
    kept = mask[0] < 0.5
    assert torch.equal(out[:, kept], x[:, kept])
    raw = edit_image(ldm, copy, cond, config, seed=0, mask=mask, paste=False)
    assert torch.equal(out[:, ~kept], raw[:, ~kept])  # the generated region is the copy's edit
    with pytest.raises(InvalidInput, match="paste-back needs one size"):
        edit_image(ldm, copy, cond, config, seed=0, mask=mask, original=x[:, :16])


def test_edits_run_and_report_floor_of_steps_times_strength(ldm_img2img):
    x, cond = blobs(1, seed=2)[0], conditioning(ldm_img2img.text, "a red car", "")
    calls = []
    hook = ldm_img2img.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        edit_image(ldm_img2img, x, cond, EditConfig("img2img", steps=5), seed=0)  # strength 0.5
    finally:
        hook.remove()
    assert len(calls) == EditConfig("img2img", steps=5).denoised_steps == 2
    assert EditConfig("inpaint", steps=5).denoised_steps == 5
    assert EditConfig("img2img", steps=5, strength=0.1).denoised_steps == 0

def test_img2img_strength_controls_how_far_the_edit_goes(ldm_img2img):
    x = blobs(1, seed=2)[0]
    cond = conditioning(ldm_img2img.text, "a red car", "")
    distance = {}
    for strength in (0.01, 0.3, 1.0):
        out = edit_image(ldm_img2img, x, cond, EditConfig("img2img", steps=10, strength=strength), seed=0)
        distance[strength] = float((out - x).pow(2).mean())
    # strength 0.01 keeps no denoising step: the VAE round trip only (random VAE: not the identity)
    roundtrip = ((ldm_img2img.decode(ldm_img2img.encode_mean(x[None] * 2 - 1) * ldm_img2img.scaling_factor)
                  + 1) / 2).clamp(0, 1)[0]
    low = edit_image(ldm_img2img, x, cond, EditConfig("img2img", steps=10, strength=0.01), seed=0)
    assert torch.allclose(low, roundtrip, atol=1e-6)
    assert distance[0.3] != distance[1.0]
    assert EditConfig("img2img").effective_strength == 0.5 and EditConfig("inpaint").effective_strength == 1.0


def test_guidance_and_prompt_matter(ldm):
    x, mask = blobs(1, seed=3)[0], centre_mask()[0]
    config = EditConfig("inpaint", steps=3, guidance=7.5)
    car = edit_image(ldm, x, conditioning(ldm.text, "a red car", ""), config, seed=0, mask=mask)
    dog = edit_image(ldm, x, conditioning(ldm.text, "a dog", ""), config, seed=0, mask=mask)
    assert not torch.equal(car, dog)
    for bad in ({"steps": 0}, {"strength": 1.5}, {"eta": -1}, {"mode": "outpaint"}):
        with pytest.raises(UsageError):
            EditConfig(**bad)


def test_fit_image_crops_to_the_aspect_and_keeps_right_sized_images():
    image = torch.rand(3, 40, 60)
    assert fit_image(image, 32).shape == (3, 32, 32)
    same = torch.rand(3, 32, 32)
    assert fit_image(same, 32) is same  # never resample an image that already has the size
    mask = torch.zeros(1, 40, 60)
    mask[:, 10:30, 20:40] = 1
    fitted = fit_image(mask, 20, nearest=True)
    assert set(fitted.unique().tolist()) <= {0.0, 1.0} and float(fitted.mean()) > 0.2


def test_lossy_output_formats_are_refused_unless_allowed(tmp_path):
    check_output_format(tmp_path / "a.png", allow_lossy=False)
    for name in ("a.jpg", "a.jpeg", "a.webp"):
        with pytest.raises(UsageError, match="lossy"):
            check_output_format(tmp_path / name, allow_lossy=False)
        check_output_format(tmp_path / name, allow_lossy=True)
    with pytest.raises(UsageError):
        check_output_format(tmp_path / "a.bmpx", allow_lossy=True)
