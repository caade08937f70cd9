"""unadv-patch: accuracy per arm (no patch, random, unadversarial, baselines; grey, random and optimised
textures) clean and under each corruption, and how conflicting patches split the predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confidently.report.registry import Block, register_section
from confidently.report.sections import fmt, new_figure, save


def _claims(record: dict[str, Any]) -> bool:
    return record.get("tool") == "unadv-patch" and record.get("cmd") in ("eval", "eval-texture")


def _mean(records: list[dict[str, Any]], arm: str, corruption: str, key: str = "acc") -> float:
    rows = [r[key] for r in records if r["arm"] == arm and r["corruption"] == corruption and r.get(key) is not None]
    return sum(rows) / len(rows) if rows else float("nan")


def _arm_blocks(records: list[dict[str, Any]], folder: Path, name: str, title: str, note: str) -> list[Block]:
    arms = list(dict.fromkeys(r["arm"] for r in records))
    corruptions = list(dict.fromkeys(r["corruption"] for r in records))
    figure, (axis,) = new_figure(width=max(5.2, 1.1 * len(corruptions) + 2))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        axis.bar([c + i * width for c in range(len(corruptions))], [_mean(records, arm, c) for c in corruptions],
                 width, label=arm)
    axis.set_xticks([c + 0.4 - width / 2 for c in range(len(corruptions))], corruptions, fontsize=8)
    axis.set(ylabel="accuracy (mean over severities)", ylim=(0, 1.02))
    axis.legend(fontsize=8)
    return [Block(title, note, image=save(figure, folder, f"{name}.png")),
            Block(f"{title}: table", columns=["arm", *corruptions],
                  rows=[[arm, *(fmt(_mean(records, arm, c)) for c in corruptions)] for arm in arms])]


def _picture_block(path_text: str | None, folder: Path, name: str, title: str) -> list[Block]:
    """The patches (one per class) or texture a record points at, when that file can be read from here."""
    if not path_text or not Path(path_text).is_file():
        return []
    from confidently.errors import InvalidInput
    from confidently.io.artifacts import load_artifact

    try:
        tensors, meta = load_artifact(path_text)
    except InvalidInput:
        return []
    pictures = tensors.get("patches", tensors.get("texture"))
    if pictures is None or pictures.ndim != 4:
        return []
    labels = tensors.get("class_ids")
    count = min(len(pictures), 10)
    figure, axes = new_figure(panels=count, width=1.4, height=1.7)
    for i, axis in enumerate(axes):
        axis.imshow(pictures[i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(f"class {int(labels[i]) if labels is not None else i}", fontsize=8)
        axis.axis("off")
    figure.set_size_inches(max(5.2, 1.4 * count), 1.9)
    return [Block(title, f"{path_text}" + (f" ({len(pictures)} in all)" if len(pictures) > count else ""),
                  image=save(figure, folder, name))]


@register_section("unadv-patch", "unadv-patch — patches and textures that make objects easy to recognise", _claims)
def draw(records: list[dict[str, Any]], folder: Path) -> list[Block]:
    patches = [r for r in records if r["cmd"] == "eval" and r["arm"] != "conflict"]
    conflict = [r for r in records if r["cmd"] == "eval" and r["arm"] == "conflict"]
    textures = [r for r in records if r["cmd"] == "eval-texture"]
    blocks = []
    if patches:
        blocks += _picture_block(patches[0].get("patches"), folder, "patches.png", "The unadversarial patches")
        blocks += _arm_blocks(patches, folder, "accuracy", "Accuracy with and without patches",
                              "corruptions act on the patched image; every arm sees the same placements")
    if conflict:
        corruptions = list(dict.fromkeys(r["corruption"] for r in conflict))
        blocks.append(Block("Conflicting patches", "the patch of another class pasted on each image: fraction "
                            "predicted as the image's class and as the patch's", columns=["corruption", "image class",
                                                                                          "patch class"],
                            rows=[[c, fmt(_mean(conflict, "conflict", c, "pred_image_frac")),
                                   fmt(_mean(conflict, "conflict", c, "pred_patch_frac"))] for c in corruptions]))
    if textures:
        blocks += _picture_block(textures[0].get("texture"), folder, "texture.png", "The unadversarial texture")
        blocks += _arm_blocks(textures, folder, "texture-accuracy", "Textured objects (3-D)",
                              "accuracy on the texture's class from held-out viewpoints; every arm sees the same views")
    return blocks
