import pytest
import torch
from confidently.data import open_dataset
from confidently.data.demo import shape_classes
from confidently.data.loader import collect
from confidently.errors import InvalidInput


def test_digits_fixed_split_and_shape():
    train, test = open_dataset("demo:digits", "train"), open_dataset("demo:digits", "test")
    assert len(train) + len(test) == 1797
    assert set(train.ids).isdisjoint(test.ids)
    image, label = test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert image.min() >= 0 and image.max() <= 1
    assert set(test.labels.tolist()) == set(range(10))
    assert open_dataset("demo:digits", "test").ids == test.ids  # deterministic


def test_shapes_deterministic_by_seed_and_any_size():
    a = open_dataset("demo:shapes?classes=4&per_class=5&size=48")
    b = open_dataset("demo:shapes?classes=4&per_class=5&size=48")
    c = open_dataset("demo:shapes?classes=4&per_class=5&size=48&seed=1")
    assert a.images.shape == (20, 3, 48, 48)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.classes == ["red circle", "green square", "blue triangle", "yellow cross"]


def test_shapes_classes_differ_in_colour_and_shape():
    pairs = shape_classes(48)
    assert len(set(pairs)) == 48
    assert len({c for c, _ in pairs[:10]}) > 3 and len({s for _, s in pairs[:10]}) == 8


def test_shape_colour_is_visible():
    data = open_dataset("demo:shapes?classes=3&per_class=20")
    images, labels = collect(data)
    red = images[labels == 0]
    green = images[labels == 1]
    # the dominant channel of the brightest-red pixels follows the class colour
    assert (red[:, 0] - red[:, 1]).amax(dim=(1, 2)).mean() > 0.4
    assert (green[:, 1] - green[:, 0]).amax(dim=(1, 2)).mean() > 0.4


def test_photos_are_real_and_unlabelled():
    photos = open_dataset("demo:photos?size=64")
    assert len(photos) >= 10
    assert "photo-astronaut" in photos.ids
    assert int(photos.labels.max()) == -1
    image = photos.image(photos.ids.index("photo-astronaut"))
    assert image.shape == (3, 64, 64) and image.std() > 0.1


@pytest.mark.parametrize(("spec", "words"), [
    ("demo:nope", "unknown demo"), ("demo:shapes?colour=1", "no option"), ("demo:shapes?classes=x", "expected int"),
    ("demo:shapes?classes=99", "between 1 and"),
])
def test_bad_demo_specs(spec, words):
    with pytest.raises(InvalidInput, match=words):
        open_dataset(spec)
