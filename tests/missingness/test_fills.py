import pytest
import torch
import torchvision.transforms.functional as TF
from confidently.errors import UsageError
from confidently.missingness import BINARY8, color_fills, make_fill
from confidently.run import derive_seed


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 16, 16, generator=generator)
    visible = torch.rand(4, 16, 16, generator=generator) < 0.6
    return images, visible


def test_black_puts_zero_and_leaves_the_rest_bitwise(batch):
    images, visible = batch
    out = make_fill("black")(images, visible)
    assert (out.permute(1, 0, 2, 3)[:, ~visible] == 0).all()
    assert torch.equal(out.permute(1, 0, 2, 3)[:, visible], images.permute(1, 0, 2, 3)[:, visible])


def test_mean_and_colour_fills(batch):
    images, visible = batch
    out = make_fill("mean", (0.1, 0.2, 0.3))(images, visible)
    assert torch.allclose(out[:, :, ~visible[0]][0].T[0], torch.tensor([0.1, 0.2, 0.3]))
    removed = make_fill("color:1,0,0.5")(images, visible).permute(1, 0, 2, 3)[:, ~visible]
    assert (removed[0] == 1).all() and (removed[1] == 0).all() and (removed[2] == 0.5).all()
    with pytest.raises(UsageError, match="color:R,G,B"):
        make_fill("color:2,0")


def test_binary8_is_eight_distinct_colours_and_28_pairs():
    fills = color_fills("binary8")
    assert len({f.color for f in fills}) == 8 == len(BINARY8)
    assert len(fills) * (len(fills) - 1) // 2 == 28


def test_blur_equals_the_full_image_blur_on_removed_pixels(batch):
    images, visible = batch
    out = make_fill("blur")(images, visible)
    blurred = TF.gaussian_blur(images, [21, 21], [10.0, 10.0])
    mask = ~visible[:, None].expand_as(images)
    assert torch.allclose(out[mask], blurred[mask]) and not make_fill("blur").true_removal


def test_random_noise_is_in_range_and_depends_only_on_the_row_seed(batch):
    images, visible = batch
    fill = make_fill("random-noise")
    seeds = [derive_seed(0, f"img-{i}", "fill", 0) for i in range(4)]
    out = fill(images, visible, seeds)
    assert out.min() >= 0 and out.max() <= 1
    alone = fill(images[2:3], visible[2:3], seeds[2:3])
    assert torch.equal(alone[0], out[2])
    assert not torch.equal(fill(images, visible, [s + 1 for s in seeds]), out)
    with pytest.raises(ValueError, match="seed"):
        fill(images, visible)


def test_random_colour_is_one_colour_per_image(batch):
    images, visible = batch
    out = make_fill("random-color")(images, visible, [1, 2, 3, 4])
    removed = out[0][:, ~visible[0]]
    assert torch.allclose(removed, removed[:, :1].expand_as(removed))


def test_drop_changes_no_pixel_and_unknown_fills_are_refused(batch):
    images, visible = batch
    assert make_fill("drop")(images, visible) is images
    with pytest.raises(UsageError, match="random-noise"):
        make_fill("grey")
