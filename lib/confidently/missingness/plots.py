"""Pictures of missingness summaries: bias curves (fraction unchanged, class entropy), top-k tests
and consistency, one panel per metric, one line per summary."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from confidently.io.atomic import write_bytes_atomic

PANELS = {
    "ablate-curve-summary/v1": [("frac_unchanged", "fraction of predictions unchanged"),
                                ("class_entropy_norm", "class entropy / max")],
    "ablate-consistency-summary/v1": [("jaccard_mean", "LIME top-k Jaccard across colours")],
    "ablate-topk-summary/v1": [("frac_unchanged", "fraction unchanged (top-k removed)")],
}


def _lines(summary: dict[str, Any], key: str, label: str) -> list[tuple[str, list[float]]]:
    if summary["schema"] == "ablate-topk-summary/v1":
        return [(f"{label}: {name}", s[key]) for name, s in summary["sources"].items()]
    lines = [(label, summary[key])]
    if summary["schema"] == "ablate-consistency-summary/v1":
        lines.append((f"{label}: random", summary["random_reference"]))
    return lines


def plot_summaries(summaries: Sequence[dict[str, Any]], labels: Sequence[str], path: str | os.PathLike,
                   title: str | None = None) -> None:
    """Draw summaries of one kind side by side into an image file (PNG, SVG or PDF by extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemas = {s.get("schema") for s in summaries}
    if len(schemas) != 1 or next(iter(schemas)) not in PANELS:
        raise ValueError(f"plot summaries of one kind ({', '.join(PANELS)}); got {sorted(map(str, schemas))}")
    panels = PANELS[next(iter(schemas))]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for axis, (key, ylabel) in zip(axes[0], panels, strict=True):
        for summary, label in zip(summaries, labels, strict=True):
            for name, values in _lines(summary, key, label):
                axis.plot(summary["ks"], values, marker="o", markersize=3, label=name,
                          linestyle="--" if name.endswith("random") else "-")
        axis.set_xlabel("features removed (k)")
        axis.set_ylabel(ylabel)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    fmt = os.path.splitext(str(path))[1].lstrip(".") or "png"
    # a PNG names its maker (``written_by``), so a re-run may replace it; SVG and PDF have no such field
    figure.savefig(buffer, format=fmt, dpi=120, metadata={"tool": "ablate"} if fmt == "png" else None)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
