"""The immunize report section: Table 4.1's layout and Fig. 4.5's per-photo grid over several methods."""

from __future__ import annotations

import torch
from confidently.io.images import save_image
from confidently.report.sections.immunize import GRID_FIELDS, NOT_COMPUTED, _grids, draw
from PIL import Image


def summary(method: str, ssim: float | None, transform: str | None = None, **extra) -> dict:
    stats = None if ssim is None else {"mean": ssim, "std": 0.1, "n": 3}
    return {"kind": "immunize.summary", "method": method, "transform": transform, "ref": "edit_clean",
            "test": "edit_immunized", "n": 3, "ssim": stats, "psnr": {"mean": 20.0, "std": 2.0, "n": 3},
            "skipped": {}, "notes": {}, **extra}


def test_table_lists_methods_random_encoder_diffusion_with_mean_std_and_n_a(tmp_path):
    records = [summary("diffusion", 0.5, fid=167.6), summary("random", 0.75), summary("encoder", None),
               summary("encoder", 0.6, "jpeg:75"),
               summary("random", 0.7, clip_model="clip", clip_ref={"mean": 0.3, "std": 0.01, "n": 3},
                       clip_test={"mean": 0.2, "std": 0.02, "n": 3}, transform="blur:1")]
    blocks = draw(records, tmp_path)
    (table,) = [b for b in blocks if b.columns]
    rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert [(r["method"], r["transform"]) for r in rows] == [("random", "–"), ("random", "blur:1"),
                                                             ("encoder", "–"), ("encoder", "jpeg:75"),
                                                             ("diffusion", "–")]
    assert rows[0]["ssim"] == "0.750 ± 0.100" and rows[2]["ssim"] == NOT_COMPUTED
    assert rows[4]["fid"] == "167.600" and rows[0]["fid"] == NOT_COMPUTED
    assert rows[1]["CLIP edit(photo)"] == "0.300 ± 0.010" and rows[0]["CLIP edit(immunized)"] == NOT_COMPUTED
    assert "Table 4.1" in table.caption


def test_grid_has_a_row_per_photo_and_method_with_mask_and_amplified_delta(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    generator = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 16, 16, generator=generator)
    save_image(photo, tmp_path / "photo.png")
    save_image(torch.ones(1, 16, 16), tmp_path / "mask.png")
    scored = []
    for method in ("diffusion", "random", "encoder"):  # out of order on purpose
        immunized = (photo + 0.03 * torch.randn(photo.shape, generator=generator)).clamp(0, 1)
        save_image(immunized, tmp_path / f"{method}.png")
        scored.append({"kind": "immunize.scored", "id": "p0", "method": method, "image": "photo.png",
                       "mask": "mask.png", "immunized": f"{method}.png", "edit_clean": "photo.png",
                       "edit_immunized": f"{method}.png", "metrics": {"ssim": 0.5}})
    (block,) = _grids(scored, tmp_path)
    assert "Fig. 4.5" in block.caption
    image = Image.open(tmp_path / block.image if not str(block.image).startswith("/") else block.image)
    width, height = image.size
    assert width > height > 0  # 3 method rows × 6 panels
    assert [label for _, label in GRID_FIELDS] == ["photo", "mask", "δ (amplified)", "immunized", "edit(photo)",
                                                   "edit(immunized)"]


def test_a_resized_photo_shows_the_attacked_photo_and_its_delta_from_the_tensors(tmp_path, monkeypatch):
    """`--size` crops and resizes: the photo file and the immunized image differ in size, so the panels come from
    the record's tensors (x and delta at the edit size); without them δ is n/a."""
    from confidently.report.sections.immunize import _pictures
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    generator = torch.Generator().manual_seed(1)
    save_image(torch.rand(3, 24, 40, generator=generator), tmp_path / "photo.png")  # the photo as the user has it
    x = torch.rand(3, 16, 16, generator=generator)
    delta = 0.05 * torch.randn(3, 16, 16, generator=generator)
    save_image((x + delta).clamp(0, 1), tmp_path / "immunized.png")
    record = {"kind": "immunize.scored", "id": "p", "method": "encoder", "image": "photo.png",
              "immunized": "immunized.png"}
    assert _pictures(record)[2] is None  # δ of two images of different sizes: not computed
    save_file({"x": x, "delta": delta}, str(tmp_path / "p.safetensors"))
    photo, _, stretched, immunized, *_ = _pictures({**record, "tensors": "p.safetensors"})
    assert photo.shape == stretched.shape == immunized.shape == (16, 16, 3)
    assert torch.allclose(torch.from_numpy(photo), x.permute(1, 2, 0))
    assert abs(float(stretched.min())) < 1e-6 or abs(float(stretched.max()) - 1) < 1e-6  # the peak spans the range
    assert torch.allclose(torch.from_numpy(stretched - 0.5) * 2 * float(delta.abs().max()), delta.permute(1, 2, 0),
                          atol=1e-5)
