"""Images from paths or tensor references, as float tensors in [0, 1] shaped C×H×W.

Paths are PNG/JPEG (anything Pillow decodes), relative to the manifest's folder or to the
working directory for stdin. Tensor references ``{"tensors": FILE, "key": KEY, "index": I}``
read one row of a safetensors tensor without loading the rest of the file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError, safe_open

from confidently.errors import InvalidInput
from confidently.io.records import Record

CHANNEL_MODES = {1: "L", 3: "RGB"}


def _resolve(path: str, base_dir: str | os.PathLike) -> str:
    """``path`` relative to ``base_dir`` (plain string operations: this runs once per record)."""
    if path.startswith("~"):
        path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def to_channels(image: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Make a C×H×W image have ``channels`` channels (grey → RGB by repetition, RGBA → RGB)."""
    if channels is None or image.shape[0] == channels:
        return image
    if image.shape[0] == 1 and channels == 3:
        return image.expand(3, -1, -1).contiguous()
    if image.shape[0] == 4 and channels == 3:
        return image[:3].contiguous()
    if image.shape[0] in (3, 4) and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        grey = (image[:3].float() * weights).sum(0, keepdim=True)
        return grey.round_().clamp_(0, 255).to(torch.uint8) if image.dtype == torch.uint8 else grey.to(image.dtype)
    raise InvalidInput(f"expected an image with 1, 3 or 4 channels, got {image.shape[0]}")


def check_pixel_range(images: torch.Tensor, what: str) -> None:
    """Refuse float pixels outside [0, 1], NaN and ±inf included (a NaN image would be classified, even certified)."""
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        bad = "NaN or infinite values" if not bool(torch.isfinite(images).all()) else "values outside [0, 1]"
        raise InvalidInput(f"{what} has {bad}; expected uint8 or finite float pixels in [0, 1]")


def decode_uint8(source: str | os.PathLike | bytes, channels: int | None = 3, *,
                 name: str | None = None) -> torch.Tensor:
    """Decode an image file (or its bytes) into a uint8 C×H×W tensor.

    What a folder of users' photos holds, converted rather than refused: EXIF orientation is
    applied, 16-bit greyscale is scaled to 8 bits (not clipped), CMYK, palette and alpha modes
    become RGB (or L for ``channels=1``). A truncated or corrupt file raises :class:`InvalidInput`
    naming the file. RGB and greyscale JPEGs decode with libjpeg-turbo (torchvision's, the same
    pixels as Pillow's, about twice as fast); everything else, and any JPEG it refuses, with Pillow.
    The result may have channels-last strides (what torch's uint8 resize is fastest on).
    """
    import io

    from PIL import ImageOps

    what = name or (f"{len(source)} bytes" if isinstance(source, bytes) else str(source))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if channels == 3 and img.format == "JPEG" and img.mode in ("RGB", "L"):
                fast = _decode_jpeg_turbo(source)
                if fast is not None:
                    return fast
            img.load()
            if img.getexif().get(0x0112, 1) != 1:
                img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                img = _to_8bit_grey(img)
            mode = CHANNEL_MODES.get(channels) if channels else ("RGB" if img.mode not in ("L", "RGB") else img.mode)
            array = np.asarray(img.convert(mode) if img.mode != mode else img)
    except IsADirectoryError:
        raise InvalidInput(f"{what} is a directory; expected an image file") from None
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidInput(f"image file does not exist: {what}") from None
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"image too large to decode safely ({exc}): {what}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"not a readable image ({type(exc).__name__}: {exc}): {what}") from None
    tensor = torch.from_numpy(np.array(array))  # a writable copy of Pillow's buffer
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _decode_jpeg_turbo(source: str | os.PathLike | bytes) -> torch.Tensor | None:
    """An RGB JPEG through libjpeg-turbo, EXIF orientation applied; None where it refuses or is missing
    (torchvision 0.29 deprecates its decoders in favour of TorchCodec), and Pillow then decides."""
    import warnings

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                               apply_exif_orientation=True)
    except (RuntimeError, ValueError, OSError):
        return None


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer / float) greyscale image scaled into 8 bits by its type's range."""
    array = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(array, 0.0, 1.0) * 255.0 if array.max(initial=0) <= 1.0 else np.clip(array, 0, 255)
    else:
        peak = 65535 if img.mode.startswith("I;16") or array.max(initial=0) <= 65535 else int(array.max())
        scaled = array.astype(np.float64) * (255.0 / peak)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def decode_file(path: str | os.PathLike, channels: int | None = 3) -> torch.Tensor:
    """Decode an image file with Pillow into a float C×H×W tensor in [0, 1] (see :func:`decode_uint8`)."""
    return as_float(decode_uint8(path, channels))


class ImageLoader:
    """Load image references, keeping recently used safetensors files open.

    One loader per stream: opening a safetensors file once and slicing rows out of it is
    what makes tensor references as cheap as files.
    """

    def __init__(self, channels: int | None = 3, max_open: int = 8):
        self.channels = channels
        self.max_open = max_open
        self._open: OrderedDict[Path, Any] = OrderedDict()

    def _handle(self, path: Path):
        handle = self._open.get(path)
        if handle is not None:
            self._open.move_to_end(path)
            return handle
        if path.is_dir():
            raise InvalidInput(f"{path} is a directory; expected a .safetensors file")
        if not path.is_file():
            raise InvalidInput(f"tensor file does not exist: {path}")
        try:
            handle = safe_open(str(path), framework="pt")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InvalidInput(f"not a safetensors file ({exc}): {path}") from None
        self._open[path] = handle
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return handle

    def load_tensor_ref(self, ref: dict, base_dir: str | os.PathLike) -> torch.Tensor:
        path = Path(_resolve(ref["tensors"], base_dir))
        handle = self._handle(path)
        key = ref["key"]
        if key not in handle.keys():
            raise InvalidInput(f"no tensor '{key}' in {path} (it has: {', '.join(sorted(handle.keys()))})")
        sliced = handle.get_slice(key)
        shape = list(sliced.get_shape())
        index = ref.get("index")
        if index is not None:
            if not shape or index >= shape[0]:
                raise InvalidInput(f"index {index} is out of range for tensor '{key}' of shape {shape} in {path}")
            tensor = sliced[index:index + 1][0]
        else:
            tensor = handle.get_tensor(key)
        return self._as_image(tensor, f"tensor '{key}' in {path}")

    def _as_image(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """A stored tensor as a C×H×W image: uint8 stays uint8, floats become float32 (checked in [0, 1])."""
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InvalidInput(f"{what} has shape {list(tensor.shape)}; expected C×H×W with C in 1, 3 or 4")
        if tensor.is_floating_point():
            tensor = tensor.float()
            check_pixel_range(tensor, what)
        elif tensor.dtype != torch.uint8:
            raise InvalidInput(f"{what} has dtype {tensor.dtype}; expected uint8 or a float type")
        return to_channels(tensor, self.channels)

    def load_raw(self, ref: str | dict, base_dir: str | os.PathLike | None = None) -> torch.Tensor:
        """The image as stored: uint8 C×H×W for files and uint8 tensors, float32 in [0, 1] for float tensors.

        What the data loader carries between processes (a quarter of float32's bytes for photos);
        float tensors stay float so stored adversarial examples are not requantised.
        """
        base = base_dir if base_dir is not None else os.getcwd()
        if isinstance(ref, dict):
            return self.load_tensor_ref(ref, base)
        return decode_uint8(_resolve(ref, base), self.channels)

    def load(self, ref: str | dict, base_dir: str | os.PathLike | None = None) -> torch.Tensor:
        """The image as float32 C×H×W in [0, 1]."""
        return as_float(self.load_raw(ref, base_dir))

    def load_field(self, record: Record, field: str = "image", *, raw: bool = False, origin: str = "") -> torch.Tensor:
        """The image a record's ``field`` refers to (a path or tensor reference, relative to the record's
        folder), as :meth:`load_raw` (``raw``) or :meth:`load` gives it; every error names the record and field
        (``origin`` says where a missing reference comes from, e.g. " (from `immunize edit`)")."""
        ref = record.data.get(field)
        if ref is None:
            raise record.error(f"missing: expected an image path or tensor reference{origin}", field)
        if not isinstance(ref, (str, dict)):
            raise record.error(f"expected an image path or tensor reference, got {type(ref).__name__}", field)
        try:
            return (self.load_raw if raw else self.load)(ref, record.base_dir)
        except InvalidInput as exc:
            raise record.error(exc.message, field) from None

    def __getstate__(self) -> dict:
        # open safetensors handles stay in the process that opened them (data-loader workers reopen)
        return {**self.__dict__, "_open": OrderedDict()}


def as_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float in [0, 1]; float pixels unchanged (as contiguous float32)."""
    scaled = image.dtype == torch.uint8
    image = image.to(torch.float32, memory_format=torch.contiguous_format)
    return image.div_(255.0) if scaled else image


def load_image(ref: str | dict, base_dir: str | os.PathLike | None = None, channels: int | None = 3) -> torch.Tensor:
    """Load one image reference (see the module docstring) as float C×H×W in [0, 1]."""
    return ImageLoader(channels).load(ref, base_dir)


def save_image(image: torch.Tensor, path: str | os.PathLike, tool: str | None = None) -> None:
    """Write a float C×H×W image in [0, 1] as PNG (or JPEG / WebP by suffix), atomically.

    ``tool`` goes into a PNG's ``tool`` text chunk, so a later run knows the file as its own (``written_by``).
    """
    from PIL import PngImagePlugin

    from confidently.io.atomic import atomic_write

    array = (image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu())
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    options = {}
    if tool is not None and fmt == "PNG":
        options["pnginfo"] = PngImagePlugin.PngInfo()
        options["pnginfo"].add_text("tool", tool)
    with atomic_write(path) as handle:
        Image.fromarray(array).save(handle, format=fmt, **options)
