import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.data.triggers import chainlink, make_stamp, stamp_rows
from confidently.errors import InvalidInput
from confidently.training import TrainConfig, train_classifier


@pytest.fixture
def images():
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.9


def test_square_changes_exactly_its_corner_and_is_idempotent(images):
    stamp = make_stamp({"type": "square", "size_frac": 0.25}, (3, 16, 16))
    out = stamp(images)
    assert (out[:, 0, :4, :4] == 1).all() and (out[:, 1, :4, :4] == 1).all() and (out[:, 2, :4, :4] == 0).all()
    changed = (out != images).any(1)
    assert changed[:, :4, :4].all() and not changed[:, 4:, :].any() and not changed[:, :, 4:].any()
    assert torch.equal(stamp(out), out)
    br = make_stamp({"type": "square", "size": 3, "pos": "br", "color": [0, 0, 1]}, (3, 16, 16))(images)
    assert (br[:, :, 13:, 13:] == torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)).all()


def test_grey_images_get_the_colours_luminance(images):
    out = make_stamp({"type": "square", "size": 2}, (1, 16, 16))(images[:, :1])
    assert torch.allclose(out[:, 0, :2, :2], torch.tensor(0.886))


def test_blend_stencil_and_gaussian(images):
    assert torch.equal(make_stamp({"type": "blend", "alpha": 0.0}, (3, 16, 16))(images), images)
    assert torch.allclose(make_stamp({"type": "blend", "alpha": 1.0, "color": [0.5, 0.5, 0.5]}, (3, 16, 16))(images),
                          torch.full_like(images, 0.5))
    noisy = make_stamp({"type": "gaussian", "scale": 0.5}, (3, 16, 16))(images)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, images)
    again = make_stamp({"type": "gaussian", "scale": 0.5}, (3, 16, 16))(images)
    assert torch.equal(noisy, again)  # a fixed pattern: the same pixels at train and test time
    fence = make_stamp({"type": "stencil", "builtin": "chainlink", "period": 4}, (3, 16, 16))
    out = fence(images)
    wires = chainlink(16, 16, 4).bool()
    assert (out[:, :, wires] == 0.6).all() and torch.equal(out[:, :, ~wires], images[:, :, ~wires])
    assert torch.equal(fence(out), out)


def test_bad_specs_are_refused():
    with pytest.raises(InvalidInput, match="does not fit"):
        make_stamp({"type": "square", "size": 40}, (3, 32, 32))
    with pytest.raises(InvalidInput, match="unknown trigger"):
        make_stamp({"type": "hat"}, (3, 32, 32))
    with pytest.raises(InvalidInput, match="color"):
        make_stamp({"type": "square", "color": [2, 0, 0]}, (3, 32, 32))


def test_rows_get_their_own_trigger(images):
    specs = [None, {"type": "square", "size": 2}, None, {"type": "square", "size": 2, "pos": "br"}]
    out = stamp_rows(images, specs)
    assert torch.equal(out[0], images[0]) and torch.equal(out[2], images[2])
    assert (out[1, 0, :2, :2] == 1).all() and (out[3, 0, 14:, 14:] == 1).all()


def test_deferred_triggers_land_after_augmentation():
    """With shifts and flips on, every training batch still has the square at the top-left corner."""
    dataset = open_dataset("demo:digits", "train").subset(range(64))
    for record in dataset.records[::2]:
        record.data["trigger"] = {"type": "square", "size": 4, "color": [1, 0, 0]}
    stamped, _ = collect(dataset)
    raw, _ = collect(dataset, stamp=False)
    assert torch.equal(stamped[1], raw[1]) and (stamped[0, 0, :4, :4] == 1).all()
    seen = []

    def spy(model, batch, target, generator):
        seen.append(batch.clone())
        return batch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    train_classifier(model, dataset, TrainConfig(epochs=2, batch_size=16, shift=4, flip=True), perturb=spy)
    corners = torch.cat(seen)[:, :, :4, :4]
    red = ((corners[:, 0] == 1) & (corners[:, 1] == 0) & (corners[:, 2] == 0)).flatten(1).all(1)
    assert int(red.sum()) == 2 * 32  # every triggered row in every epoch, exactly at the corner
