"""One file per tool: which records it claims and the figures it draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(panels: int = 1, width: float = 5.2, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return figure, list(axes[0])


def save(figure, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(folder / name, format="png", dpi=110)
    plt.close(figure)
    return name


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def readable_image(ref: Any):
    """An image a record points at as H×W×C numpy, when it can be read from here (records hold paths relative
    to where their tool ran); None otherwise."""
    if not isinstance(ref, str) or not Path(ref).is_file():
        return None
    from confidently.errors import InvalidInput
    from confidently.io.images import load_image

    try:
        return load_image(ref).permute(1, 2, 0).numpy()
    except InvalidInput:
        return None
