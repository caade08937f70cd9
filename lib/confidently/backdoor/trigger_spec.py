"""A trigger as poisoned records carry it: a JSON spec (``{"type": "square", "size": 8}``), built from
options or read from a file, checked against the images it will stamp, or saved as pixels.

The stamps themselves are data transforms (:mod:`confidently.data.triggers`); a spec names one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confidently.data.triggers import Stamp, list_triggers, make_stamp
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.io.images import ImageLoader
from confidently.io.records import Record


def build_trigger_spec(trigger: str = "square", *, size_frac: float | None = None, size: int | None = None,
                       pos: str | None = None, color: str | Sequence[float] | None = None,
                       scale: float | None = None, alpha: float | None = None, pattern_seed: int | None = None,
                       image: Path | None = None, builtin: str | None = None,
                       trigger_file: Path | None = None) -> dict[str, Any]:
    """The spec of a ``trigger`` type with the options given (None: the type's default), or the one in
    ``trigger_file`` (a JSON spec; a ``.safetensors`` from :func:`save_trigger` is referenced, not read).

    Paths become absolute, so records that carry the spec stamp the same pixels from any folder.
    """
    if trigger_file is not None:
        if trigger_file.suffix == ".safetensors":
            return {"type": "file", "path": str(trigger_file.resolve())}
        try:
            return json.loads(trigger_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"trigger_file {trigger_file}: not a readable JSON trigger spec ({exc})") from None
    if trigger not in list_triggers():
        raise UsageError(f"`trigger` {trigger!r}: choose {', '.join(t for t in list_triggers() if t != 'file')}")
    spec: dict[str, Any] = {"type": trigger}
    values = {"size_frac": size_frac, "size": size, "pos": pos, "scale": scale, "alpha": alpha,
              "pattern_seed": pattern_seed, "builtin": builtin, "image": str(image.resolve()) if image else None}
    spec.update({k: v for k, v in values.items() if v is not None})
    if color is not None:
        try:
            spec["color"] = [float(c) for c in (color.split(",") if isinstance(color, str) else color)]
        except ValueError:
            raise UsageError(f"`color` {color!r}: expected R,G,B in [0, 1], e.g. 1,1,0") from None
    return spec


def check_trigger_fits(records: Sequence[Record], spec: dict[str, Any], size: int | None = None) -> None:
    """Materialise the trigger for the first image (at ``size``×``size`` if given), so a trigger that cannot fit
    fails now, not in training."""
    if not records:
        return
    image = ImageLoader(None).load_field(records[0], "image")
    make_stamp(spec, (image.shape[0], size, size) if size else tuple(image.shape))


def save_trigger(path: Path, spec: dict[str, Any], shape: Sequence[int], *, config: dict[str, Any] | None = None,
                 seed: int | None = None) -> Stamp:
    """The trigger's pixels for images of ``shape`` (C, H, W) as an artifact (``pattern`` C×H×W, ``mask``
    1×H×W) that ``{"type": "file"}`` specs stamp; returns the stamp."""
    stamp = make_stamp(spec, shape)
    save_artifact(path, {"pattern": stamp.pattern.float().contiguous(), "mask": stamp.mask.float().contiguous()},
                  artifact_metadata(tool="plant-backdoor", kind="trigger", config=config, seed=seed,
                                    schema="trigger/v1", mode=stamp.mode, trigger=spec))
    return stamp
