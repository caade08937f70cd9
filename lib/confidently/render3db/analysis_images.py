"""Analyses that read the stored renders, not just the records: background complexity (thesis Fig. 6.7)
and the UV accuracy heat map of an object's surface (Fig. 6.12).

Records point at what ``render-3db run`` stored: ``image`` is a PNG path or a shard row, ``segmentation``
and ``uv`` are shard rows (``--images-shard`` with ``render_args.with_segmentation`` / ``with_uv``); paths
are relative to the records file's folder (``base``).

Background complexity is measured on the renders themselves, because a record names its environment by
id only (its HDRI, .blend or procedural recipe is not reachable from the records): the Sobel magnitude of
the grayscale render, averaged over the pixels whose whole 3×3 neighbourhood is background in the
segmentation pass (so the object and its outline never count), scaled by the largest possible magnitude
(4·√2) into [0, 1]. ``backgrounds=DIR`` measures image files ``DIR/<environment>.png|.jpg|.jpeg`` whole
instead (3DB's own environment images, exported to PNG).

UV texels follow the project's texture convention (``row = floor(v·N)``, ``col = floor(u·N)``, as
``unadv-patch`` textures are laid): a texel is visible in a render when at least one pixel of the object's
segmentation label maps to it; each render counts once per visible texel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from confidently.errors import InvalidInput, UsageError
from confidently.render3db.analysis import judged, pearson, spearman, wilson

SOBEL_MAX = 4 * math.sqrt(2)  # |∇| of a 0 → 1 step seen by both 3×3 Sobel kernels at once
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class StoredRenders:
    """Reads the tensors a record references (``image``, ``segmentation``, ``uv``), shards opened once."""

    def __init__(self, base: Path):
        self.base = Path(base)
        self.shards: dict[Path, Any] = {}

    def get(self, record: dict[str, Any], name: str) -> torch.Tensor | None:
        ref = record.get(name)
        if ref is None:
            return None
        if isinstance(ref, str):
            from confidently.io.images import decode_uint8

            path = self.base / ref
            if not path.is_file():
                raise InvalidInput(f"record {record.get('id')}: {name} {path} does not exist (paths are relative "
                                   "to the records file's folder)")
            return decode_uint8(path, 3)
        from confidently.io.artifacts import ArtifactRows

        path = self.base / str(ref["tensors"])
        if path not in self.shards:
            if not path.is_file():
                raise InvalidInput(f"record {record.get('id')}: shard {path} does not exist (paths are relative "
                                   "to the records file's folder)")
            self.shards[path] = ArtifactRows(path)
        return self.shards[path].row(str(ref["key"]), int(ref["index"]))


def _labels(record: dict[str, Any]) -> list[int]:
    label = record.get("label")
    return [int(v) for v in (label if isinstance(label, list) else [label]) if v is not None]


def sobel_complexity(rgb: torch.Tensor, background: torch.Tensor | None = None) -> float | None:
    """Mean Sobel magnitude (in [0, 1]) of a 3×H×W image (uint8 or float in [0, 1]) over the pixels whose
    3×3 neighbourhood is all ``background`` (H×W bool; default everywhere); None when no pixel qualifies."""
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]
    gx, gy = F.conv2d(grey, kernels)[0]
    magnitude = torch.sqrt(gx * gx + gy * gy) / SOBEL_MAX
    if background is None:
        return float(magnitude.mean())
    inside = F.max_pool2d((~background).float()[None, None], 3, stride=1)[0, 0] == 0
    return float(magnitude[inside].mean()) if inside.any() else None


def _file_backgrounds(directory: Path, environments: list[str]) -> dict[str, float]:
    from confidently.io.images import decode_uint8

    out, missing = {}, []
    for env in environments:
        found = next((directory / f"{env}{s}" for s in IMAGE_SUFFIXES if (directory / f"{env}{s}").is_file()), None)
        if found is None:
            missing.append(env)
            continue
        out[env] = sobel_complexity(decode_uint8(found, 3))
    if missing:
        raise InvalidInput(f"--backgrounds {directory}: no image for environment(s) {', '.join(missing)} "
                           f"(expected <environment>{'|'.join(IMAGE_SUFFIXES)})")
    return out


def background_complexity(records: list[dict[str, Any]], base: Path,
                          backgrounds: Path | None = None) -> list[dict[str, Any]]:
    """Per environment: complexity, accuracy (Wilson 95 %); then one ``background_correlation`` row with
    Spearman's and Pearson's r of accuracy against complexity over the environments."""
    records = judged(records)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        tally[str(r.get("environment"))][0] += int(r["is_correct"])
        tally[str(r.get("environment"))][1] += 1
    environments = sorted(tally)
    if backgrounds is not None:
        complexity, measured = _file_backgrounds(Path(backgrounds), environments), None
    else:
        stored = StoredRenders(base)
        per_env: dict[str, list[float]] = defaultdict(list)
        for r in records:
            if r.get("image") is None or r.get("segmentation") is None:
                raise UsageError(f"record {r.get('id')} has no stored image and segmentation: run with "
                                 "--images-shard and render_args.with_segmentation: true, or give --backgrounds DIR "
                                 "with one image per environment")
            seg = stored.get(r, "segmentation")[0]
            value = sobel_complexity(stored.get(r, "image"), seg < 0)
            if value is not None:
                per_env[str(r.get("environment"))].append(value)
        complexity = {env: float(np.mean(v)) for env, v in per_env.items()}
        measured = {env: len(v) for env, v in per_env.items()}
    rows = []
    for env in environments:
        if env not in complexity:
            continue
        correct, n = tally[env]
        row = {"analysis": "background_complexity", "environment": env, "complexity": complexity[env], "n": n,
               "correct": correct, "acc": correct / n, "ci": wilson(correct, n)}
        if measured is not None:
            row["measured_renders"] = measured[env]
        rows.append(row)
    x = np.array([r["complexity"] for r in rows])
    y = np.array([r["acc"] for r in rows])
    rows.append({"analysis": "background_correlation", "environments": len(rows),
                 "source": "files" if backgrounds is not None else "renders",
                 "spearman": spearman(x, y), "pearson": pearson(x, y)})
    return rows


def uv_heatmap(records: list[dict[str, Any]], base: Path, obj: str, tex_size: int) -> dict[str, Any]:
    """Per texel of ``obj``'s N×N UV square: renders where it is visible, those judged correct, and
    ``acc`` = correct / visible (NaN where never visible); ``row`` summarises it."""
    if tex_size < 1:
        raise UsageError(f"--tex-size {tex_size}: expected a positive texel count")
    records = judged(records)
    mine = [r for r in records if r.get("object") == obj]
    if not mine:
        objects = sorted({str(r.get("object")) for r in records})
        raise UsageError(f"--object {obj!r}: no judged record of it (objects: {', '.join(objects)})")
    stored = StoredRenders(base)
    visible = torch.zeros(tex_size * tex_size, dtype=torch.int64)
    correct = torch.zeros_like(visible)
    for r in mine:
        if r.get("uv") is None or r.get("segmentation") is None:
            raise UsageError(f"record {r.get('id')} has no stored UV and segmentation passes: run with "
                             "--images-shard and render_args.with_uv: true, with_segmentation: true")
        uv = stored.get(r, "uv").float()
        seg = stored.get(r, "segmentation")[0]
        mask = torch.isin(seg, torch.tensor(_labels(r), dtype=seg.dtype))
        cols = (uv[0][mask] * tex_size).long().clamp(0, tex_size - 1)
        rows = (uv[1][mask] * tex_size).long().clamp(0, tex_size - 1)
        texels = torch.unique(rows * tex_size + cols)
        visible[texels] += 1
        correct[texels] += int(r["is_correct"])
    visible, correct = visible.view(tex_size, tex_size), correct.view(tex_size, tex_size)
    acc = torch.where(visible > 0, correct.double() / visible.clamp_min(1), torch.tensor(float("nan"),
                                                                                          dtype=torch.float64))
    seen = acc[visible > 0]
    row = {"analysis": "uv_heatmap", "object": obj, "tex_size": tex_size, "renders": len(mine),
           "visible_texels": int((visible > 0).sum()),
           "acc_min": float(seen.min()) if len(seen) else None, "acc_max": float(seen.max()) if len(seen) else None,
           "acc_mean": float(seen.mean()) if len(seen) else None}
    return {"visible": visible, "correct": correct, "acc": acc, "row": row}


def _r(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def plot_complexity(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["analysis"] == "background_complexity"]
    summary = rows[-1]
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.scatter([r["complexity"] for r in points], [r["acc"] for r in points], color="#4c72b0")
    for r in points:
        ax.annotate(r["environment"], (r["complexity"], r["acc"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("background complexity (mean Sobel magnitude)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"Spearman {_r(summary['spearman'])}, Pearson {_r(summary['pearson'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_uv(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(np.ma.masked_invalid(result["acc"].numpy()), vmin=0, vmax=1, cmap="coolwarm",
                      extent=(0, 1, 1, 0))
    ax.set_xlabel("u")
    ax.set_ylabel("v")
    ax.set_title(f"{result['row']['object']}: accuracy where each texel is visible", fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
