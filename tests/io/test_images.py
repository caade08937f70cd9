import zlib

import numpy as np
import pytest
import torch
from confidently.errors import InvalidInput
from confidently.io.images import ImageLoader, decode_uint8, load_image, save_image
from PIL import Image
from safetensors.torch import save_file

from tests.photos import make_imagenet_folder


def test_png_round_trip_is_exact(tmp_path):
    image = torch.randint(0, 256, (3, 9, 7), dtype=torch.uint8).float() / 255
    save_image(image, tmp_path / "a.png")
    loaded = load_image("a.png", tmp_path)
    assert loaded.shape == (3, 9, 7) and loaded.dtype == torch.float32
    assert torch.equal(loaded, image)


def test_grey_and_rgba_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 5), 128, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.zeros((4, 5, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    assert load_image("g.png", tmp_path).shape == (3, 4, 5)
    assert load_image("a.png", tmp_path).shape == (3, 4, 5)
    assert load_image("g.png", tmp_path, channels=1).shape == (1, 4, 5)


def test_tensor_reference_reads_one_row(tmp_path):
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    save_file({"images": images, "f": torch.rand(3, 4, 4)}, tmp_path / "x.safetensors")
    loader = ImageLoader()
    row = loader.load({"tensors": "x.safetensors", "key": "images", "index": 3}, tmp_path)
    assert torch.equal(row, images[3].float() / 255)
    whole = loader.load({"tensors": "x.safetensors", "key": "f"}, tmp_path)
    assert whole.shape == (3, 4, 4)


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG that claims width×height pixels (all Pillow reads before refusing it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("ref", "words"), [
    ({"tensors": "x.safetensors", "key": "nope", "index": 0}, "no tensor 'nope'"),
    ({"tensors": "x.safetensors", "key": "images", "index": 5}, "out of range"),
    ({"tensors": "x.safetensors", "key": "flat", "index": 0}, "shape"),
    ({"tensors": "x.safetensors", "key": "wide"}, "shape"),
    ({"tensors": "x.safetensors", "key": "big"}, "outside [0, 1]"),
    ({"tensors": "missing.safetensors", "key": "images"}, "does not exist"),
    ("missing.png", "does not exist"),
    ("broken.png", "not a readable image"),
    ("text.png", "not a readable image"),
    ({"tensors": "x.safetensors", "key": "nan"}, "NaN or infinite"),
    ({"tensors": "x.safetensors", "key": "inf", "index": 1}, "NaN or infinite"),
    ("folder", "is a directory"),
    ({"tensors": "folder", "key": "images"}, "is a directory"),
    ("bomb.png", "too large"),
])
def test_bad_references(tmp_path, ref, words):
    inf = torch.zeros(2, 3, 2, 2)
    inf[1, 2, 1, 1] = -float("inf")
    save_file({"images": torch.zeros(5, 3, 4, 4, dtype=torch.uint8), "flat": torch.zeros(2, 4),
               "wide": torch.zeros(7, 4, 4), "big": torch.full((3, 2, 2), 2.0),
               "nan": torch.full((3, 2, 2), float("nan")), "inf": inf}, tmp_path / "x.safetensors")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bomb.png").write_bytes(png_header(60000, 60000))
    save_image(torch.rand(3, 16, 16), tmp_path / "full.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InvalidInput, match=words if words != "outside [0, 1]" else r"outside \[0, 1\]"):
        load_image(ref, tmp_path)


def test_decode_uint8_converts_what_users_folders_hold(tmp_path):
    """Greyscale, CMYK, 16-bit PNG and EXIF-rotated photos decode to RGB uint8; a truncated JPEG names its file."""
    val = make_imagenet_folder(tmp_path, train_per_class=0, val_per_class=1, truncated=True) / "val" / "n01440764"
    grey = decode_uint8(val / "grey.JPEG")
    assert grey.dtype == torch.uint8 and grey.shape[0] == 3 and torch.equal(grey[0], grey[2])
    deep = decode_uint8(val / "deep.png", channels=1)
    source = np.asarray(Image.open(val / "deep.png"), dtype=np.float64) / 257  # 16-bit: scaled, not clipped
    assert deep.shape == (1, *source.shape) and np.abs(deep[0].numpy() - source).max() <= 0.5
    assert 60 < deep.float().mean() < 200
    cmyk = decode_uint8(val / "cmyk.JPEG")
    assert cmyk.shape == (3, 80, 80) and 60 < cmyk.float().mean() < 200
    assert decode_uint8(val / "exif.JPEG").shape == (3, 96, 64)  # stored 96 wide; orientation 6 stands it up
    with pytest.raises(InvalidInput, match="truncated.JPEG") as info:
        decode_uint8(val / "truncated.JPEG")
    assert "truncated" in info.value.message
