"""An ImageNet-layout folder of real photos at mixed sizes, made inside the tests.

``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``: each class is crops of one scikit-image photo
at different sizes and aspect ratios, so a model can tell them apart. ``val`` of the first class
also holds what users' folders hold: a greyscale JPEG, a CMYK JPEG, a 16-bit greyscale PNG and a
JPEG whose EXIF orientation rotates it; ``truncated=True`` adds a JPEG cut short.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n02102040", "n02979186")
PHOTOS = ("astronaut", "chelsea", "coffee")
SIZES = ((96, 64), (64, 96), (80, 80), (120, 72), (50, 70), (72, 128))


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def _crop(photo: Image.Image, index: int) -> Image.Image:
    width, height = SIZES[index % len(SIZES)]
    rng = np.random.default_rng(index)
    side = int(min(photo.size) * rng.uniform(0.6, 0.95))
    left = int(rng.integers(0, photo.size[0] - side + 1))
    top = int(rng.integers(0, photo.size[1] - side + 1))
    return photo.crop((left, top, left + side, top + side)).resize((width, height), Image.BILINEAR)


def make_imagenet_folder(root: Path, train_per_class: int = 12, val_per_class: int = 4, *,
                         special: bool = True, truncated: bool = False) -> Path:
    for c, (wnid, name) in enumerate(zip(WNIDS, PHOTOS, strict=True)):
        photo = _photo(name)
        for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, 1000)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _crop(photo, offset + 7 * i + c).save(folder / f"{wnid}_{offset + i:05d}.JPEG", quality=90)
    val = root / "val" / WNIDS[0]
    if special:
        photo = _photo(PHOTOS[0])
        _crop(photo, 1).convert("L").save(val / "grey.JPEG", quality=90)
        _crop(photo, 2).convert("CMYK").save(val / "cmyk.JPEG", quality=90)
        grey16 = (np.asarray(_crop(photo, 3).convert("L"), dtype=np.uint16) * 257)
        Image.fromarray(grey16).save(val / "deep.png")  # mode I;16
        rotated = _crop(photo, 0)  # 96 wide, 64 high; orientation 6 shows it 64 wide, 96 high
        exif = Image.Exif()
        exif[0x0112] = 6
        rotated.save(val / "exif.JPEG", quality=90, exif=exif.tobytes())
    if truncated:
        buffer = io.BytesIO()
        _crop(_photo(PHOTOS[0]), 4).save(buffer, format="JPEG", quality=90)
        (val / "truncated.JPEG").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return root
