"""Unadversarial patches (thesis ch. 3): per-class stickers optimised so a fixed model recognises the
object more easily, under random placement, rotation and scale (expectation over transformations).

A patch lives in [0, 1] pixel space (printable); compositing is m_t ⊙ W_t(P) + (1 − m_t) ⊙ x with the
patch and its square mask warped by the same affine t, then the model normalises. Placements are drawn
from a seeded generator, so every arm of an evaluation sees the same ones and ``apply`` is exact.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from confidently.errors import InvalidInput, UsageError

if TYPE_CHECKING:
    from confidently.models.classifier import Classifier


@dataclass(frozen=True)
class Placement:
    """How patches land: rotation ±``degrees``, isotropic ``scale`` range, and where the centre goes:
    ``anywhere`` (± ``translate`` of the side, the thesis), ``center``, or ``region`` (a normalised box)."""

    degrees: float = 45.0
    translate: float = 0.3
    scale: tuple[float, float] = (0.9, 1.1)
    mode: str = "anywhere"
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def __post_init__(self):
        if self.mode not in ("anywhere", "center", "region"):
            raise UsageError(f"--placement {self.mode!r}: choose anywhere, center or region")
        x0, y0, x1, y1 = self.region
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise UsageError(f"--region {self.region}: expected x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 (same for y)")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_metadata(cls, transform: Mapping[str, Any] | None, source: str = "patch file") -> Placement:
        """The placement a patch file records (its ``transform`` metadata, as :meth:`as_dict` wrote it), so
        evaluation sees the patches where they were trained; fields the file lacks keep their defaults."""
        if transform is None:
            return cls()
        names = {f.name for f in fields(cls)}
        try:
            values = {k: v if k == "mode" else tuple(map(float, v)) if k in ("scale", "region") else float(v)
                      for k, v in transform.items() if k in names}
            return cls(**values)
        except (UsageError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"{source}: its placement metadata {transform!r} is not valid ({exc})",
                               field="transform") from None

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """N×4: angle (degrees), scale, centre offset x and y (fractions of the side from the middle)."""
        uniform = torch.rand(count, 4, generator=generator, dtype=torch.float64)
        angle = (2 * uniform[:, 0] - 1) * self.degrees
        scale = self.scale[0] + uniform[:, 1] * (self.scale[1] - self.scale[0])
        if self.mode == "anywhere":
            dx, dy = (2 * uniform[:, 2] - 1) * self.translate, (2 * uniform[:, 3] - 1) * self.translate
        elif self.mode == "center":
            dx = dy = torch.zeros(count, dtype=torch.float64)
        else:
            x0, y0, x1, y1 = self.region
            dx, dy = x0 + uniform[:, 2] * (x1 - x0) - 0.5, y0 + uniform[:, 3] * (y1 - y0) - 0.5
        return torch.stack([angle, scale, dx, dy], dim=1).float()


def make_placement(degrees: float = 45.0, translate: float = 0.3, scale: str = "0.9,1.1", placement: str = "anywhere",
                   region: str | None = None) -> Placement:
    """A placement as people write it: ``scale`` as ``LOW,HIGH`` and ``region`` as ``x0,y0,x1,y1`` (None: the
    whole image)."""
    try:
        low, high = (float(v) for v in scale.split(","))
        box = tuple(float(v) for v in region.split(",")) if region else (0.0, 0.0, 1.0, 1.0)
    except ValueError:
        raise UsageError("`scale` LOW,HIGH and `region` x0,y0,x1,y1 take comma-separated numbers") from None
    if len(box) != 4:
        raise UsageError(f"`region` {region!r}: expected x0,y0,x1,y1")
    return Placement(degrees, translate, (low, high), placement, box)


PLACEMENT_ARGUMENTS = {"degrees": "degrees", "translate": "translate", "scale": "scale", "placement": "mode",
                       "region": "region"}  # make_placement's argument → the Placement field it sets


def chosen_placement(stored: Placement, given: Placement, overrides: Collection[str]) -> tuple[Placement, str]:
    """The patch file's placement with each field whose :func:`make_placement` argument is in ``overrides``
    taken from ``given`` (patches land as they were trained unless told otherwise), and where it came from:
    ``patches``, ``options`` or ``patches+options``."""
    replaced = {field: getattr(given, field) for argument, field in PLACEMENT_ARGUMENTS.items()
                if argument in overrides}
    source = "patches" if not replaced else "options" if len(replaced) == len(PLACEMENT_ARGUMENTS) \
        else "patches+options"
    return replace(stored, **replaced), source


def load_patch_file(path) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """A patch file's patches (K×C×p×p in [0, 1]), class ids (default 0..K−1) and metadata, checked."""
    from confidently.io.artifacts import load_artifact

    tensors, meta = load_artifact(path)
    patches = tensors.get("patches")
    if patches is None or patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise InvalidInput(f"{path} is not a patch file (needs 'patches' K×C×p×p from `unadv-patch train`)")
    class_ids = tensors.get("class_ids", torch.arange(len(patches), dtype=torch.int64))
    if class_ids.shape != (len(patches),):
        raise InvalidInput(f"{path}: 'class_ids' must hold one class per patch ({len(patches)})")
    if float(patches.min()) < 0 or float(patches.max()) > 1:
        raise InvalidInput(f"{path}: patch values lie outside [0, 1]")
    return patches.float(), class_ids, meta


def save_patches(path, patches: torch.Tensor, model: Classifier, placement: Placement, **extra: Any) -> None:
    """A patch file: ``patches`` K×C×p×p and ``class_ids`` 0..K−1, with the placement they were made for (so
    evaluation lands them the same way) and the model's geometry; ``extra`` goes into the metadata."""
    from confidently.io.artifacts import artifact_metadata, save_artifact

    save_artifact(path, {"patches": patches.float().contiguous(),
                         "class_ids": torch.arange(len(patches), dtype=torch.int64)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d", image_size=list(model.input_size[1:]),
                                    patch_size=int(patches.shape[-1]), transform=placement.as_dict(),
                                    num_classes=model.num_classes, **extra))


def load_patches(path, model: Classifier) -> tuple[torch.Tensor, dict[str, Any]]:
    """The patches of a file checked against the model (one per class, its channels, no larger than its
    inputs), and the file's metadata."""
    patches, _, meta = load_patch_file(path)
    if len(patches) != model.num_classes:
        raise InvalidInput(f"{path} has {len(patches)} class patches but the model has {model.num_classes} classes")
    if patches.shape[1] != model.input_size[0] or patches.shape[-1] > min(model.input_size[1:]):
        raise InvalidInput(f"{path}: patches of shape {list(patches.shape[1:])} do not fit the model's "
                           f"{list(model.input_size)} inputs")
    return patches, meta


def patch_side(height: int, width: int, patch_size: int | None, patch_frac: float | None) -> int:
    side = patch_size if patch_size is not None else round(math.sqrt(patch_frac or 0.05) * min(height, width))
    if not 1 <= side <= min(height, width):
        raise UsageError(f"patch side {side} does not fit the {height}×{width} images")
    return side


WARPS = ("bilinear", "nearest")


def composite(images: torch.Tensor, patches: torch.Tensor, placements: torch.Tensor,
              warp: str = "bilinear") -> torch.Tensor:
    """Paste one patch per image (``patches`` N×C×p×p) with ``placements`` (N×4); differentiable in the patches.

    ``warp`` resamples the patch and its mask: ``bilinear`` (trained patches) or ``nearest`` (QR codes,
    whose modules must stay crisp, and whose edge then stays binary)."""
    if warp not in WARPS:
        raise UsageError(f"warp {warp!r}: choose {' or '.join(WARPS)}")
    batch, channels, height, width = images.shape
    side = patches.shape[-1]
    top, left = (height - side) // 2, (width - side) // 2
    canvas = F.pad(patches.to(images.dtype), (left, width - side - left, top, height - side - top))
    mask = F.pad(torch.ones(batch, 1, side, side, dtype=images.dtype, device=images.device),
                 (left, width - side - left, top, height - side - top))
    angle = placements[:, 0].to(images.device).double() * math.pi / 180
    scale = placements[:, 1].to(images.device).double()
    shift = torch.stack([2 * placements[:, 2], 2 * placements[:, 3]], dim=1).to(images.device).double()
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.stack([torch.stack([cos * scale, -sin * scale], 1), torch.stack([sin * scale, cos * scale], 1)], 1)
    inverse = torch.linalg.inv(forward)  # affine_grid maps output coordinates to input ones
    theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], dim=2).to(images.dtype)
    grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
    warped = F.grid_sample(torch.cat([canvas, mask], 1), grid, mode=warp, padding_mode="zeros",
                           align_corners=False)
    patch, weight = warped[:, :channels], warped[:, channels:]
    return (weight * patch + (1 - weight) * images).clamp(0, 1)


def init_patches(count: int, channels: int, side: int, generator: torch.Generator, init: str = "rand") -> torch.Tensor:
    """K×C×p×p in [0, 1]: N(0.5, 0.1²) clipped (``rand``, the reference's default) or constant 0.5."""
    if init == "const":
        return torch.full((count, channels, side, side), 0.5)
    if init != "rand":
        raise UsageError(f"--init {init!r}: choose rand or const")
    return (0.5 + 0.1 * torch.randn(count, channels, side, side, generator=generator)).clamp(0, 1)
