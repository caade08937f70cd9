"""The unadversarial methods end to end, one call each: open the model and the data, run the method, write the
patch, texture or image file, and return the rows to report. Each ``unadv-patch`` command is one of these
calls, so a Python user gets the same files and rows as the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from confidently.data import ImageDataset, open_dataset, open_source
from confidently.data.source import Source
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, load_artifact
from confidently.io.atomic import guard_output
from confidently.io.images import ImageLoader, save_image
from confidently.io.records import Record
from confidently.io.shard_writer import ShardWriter
from confidently.models import load_model
from confidently.models.classifier import Classifier
from confidently.render import MitsubaRenderer, ViewSampler
from confidently.run import record_generator, resolve_device
from confidently.unadversarial.baselines import baseline_patches
from confidently.unadversarial.limits import MAX_BACKGROUNDS
from confidently.unadversarial.patches import (
    Placement,
    chosen_placement,
    composite,
    init_patches,
    load_patch_file,
    load_patches,
    patch_side,
    save_patches,
)
from confidently.unadversarial.texture import (
    BACKGROUNDS,
    ImageBackgrounds,
    TextureConfig,
    evaluate_textures,
    load_texture,
    save_texture,
    train_texture,
)
from confidently.unadversarial.train import (
    PatchConfig,
    background_images,
    check_labels,
    eval_batches,
    evaluate_arms,
    train_patches,
    training_batches,
)

TOOL = "unadv-patch"  # the producer the files written here name (DESIGN: artifacts name their tool)
OnStep = Callable[[dict[str, Any]], None]


def model_and_data(model_path, data: str | None, split: str | None = None,
                   device: str = "auto") -> tuple[Classifier, Source | None]:
    """The model and the dataset (records only: images stream through the model's eval preprocessing later),
    its labels checked against the model (tar shards' labels as they stream); ``data`` None: no dataset."""
    model = load_model(model_path, resolve_device(device))
    if data is None:
        return model, None
    dataset = open_source(data, split, channels=model.input_size[0])
    if isinstance(dataset, ImageDataset):
        check_labels(dataset, model.num_classes, data)
    return model, dataset


def model_for_class(model_path, class_id: int, device: str = "auto") -> Classifier:
    """The model, refusing a class it does not have before any rendering or simulator work starts."""
    model = load_model(model_path, resolve_device(device))
    if not 0 <= class_id < model.num_classes:
        raise UsageError(f"class_id {class_id}: the model has {model.num_classes} classes "
                         f"(0..{model.num_classes - 1})")
    return model


def loss_summary(losses: Sequence[float]) -> dict[str, float]:
    """The mean loss over the first and over the last tenth of the steps: did the optimisation go down?"""
    tenth = max(1, len(losses) // 10)
    head, tail = losses[:tenth], losses[-tenth:]
    return {"first_loss": sum(head) / len(head), "final_loss": sum(tail) / len(tail)}


# ----------------------------------------------------------------------------------------- 2-D patches

def train_patch_file(model: Classifier, dataset: Source, out, placement: Placement, config: PatchConfig, *,
                     patch_size: int | None = None, patch_frac: float | None = None, init: str = "rand",
                     seed: int = 0, workers: int | None = None, on_step: OnStep | None = None,
                     model_file: str | None = None, data: str | None = None) -> dict[str, Any]:
    """One patch per class optimised on ``dataset`` (shuffled epochs from ``seed``) over ``placement``, written
    to ``out`` with how it was made (``model_file`` and ``data`` name the inputs); returns the patch size and
    fraction, the class count, the steps and the first and final losses."""
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    generator = torch.Generator().manual_seed(seed)
    start = init_patches(model.num_classes, model.input_size[0], side, generator, init)
    batches = training_batches(dataset, model, config, seed, workers=workers)
    patches, losses = train_patches(model, batches, start, placement, config, generator, on_step=on_step)
    in_loop = list(config.corruptions)
    save_patches(out, patches, model, placement, optimizer=config.optimizer, lr=config.lr, steps=config.steps,
                 seed=seed, init=init, model_file=model_file, data=data, train_corruptions=in_loop,
                 train_severities=list(config.severities) if in_loop else [],
                 train_corruption_prob=config.corruption_prob if in_loop else 0.0)
    return {"patch_size": side, "patch_frac": side * side / (model.input_size[1] * model.input_size[2]),
            "num_classes": model.num_classes, "steps": config.steps, **loss_summary(losses)}


@dataclass(frozen=True)
class PatchEvaluation:
    """The accuracy rows of :func:`evaluate_patch_file`, and the placement and patch size they were measured at."""

    rows: list[dict[str, Any]]
    placement: Placement
    placement_source: str
    patch_size: int


def evaluate_patch_file(model: Classifier, dataset: Source, patches_path, *, baselines: Iterable = (),
                        corruptions: Sequence[str] = (), severities: Sequence[int] = (),
                        placement: Placement = Placement(), overrides: Iterable[str] = (), conflict: bool = False,
                        seed: int = 0, batch_size: int = 64, workers: int | None = None) -> PatchEvaluation:
    """Accuracy with no patch, a random patch (drawn as the file's patches started), the file's patches and each
    baseline file's (arm: its stem), clean and under each corruption × severity; ``conflict`` adds the arm where
    each image carries another class's patch. Patches land as the file says they were trained, except the
    :func:`~confidently.unadversarial.patches.make_placement` arguments named in ``overrides``, taken from
    ``placement``. Noise, placements and conflict classes come from (seed, record id)."""
    patches, meta = load_patches(patches_path, model)
    random = init_patches(len(patches), patches.shape[1], patches.shape[-1],
                          torch.Generator().manual_seed(int(meta.get("seed", 0))), meta.get("init", "rand"))
    arms: dict[str, torch.Tensor | None] = {"none": None, "random": random, "unadv": patches}
    warps = dict.fromkeys(("unadv", "conflict"), meta.get("warp", "bilinear"))
    for path in baselines:
        arms[Path(path).stem], other = load_patches(path, model)
        warps[Path(path).stem] = other.get("warp", "bilinear")
    where, source = chosen_placement(Placement.from_metadata(meta.get("transform"), str(patches_path)), placement,
                                     set(overrides))
    batches = eval_batches(dataset, model, batch_size, workers=workers, describe="evaluating")
    rows = evaluate_arms(model, batches, arms, where, corruptions, severities, seed, warps=warps,
                         conflict=patches if conflict else None)
    return PatchEvaluation(rows, where, source, int(patches.shape[-1]))


def baseline_patch_file(kind: str, model: Classifier, dataset: Source | None, out, *, patch_size: int | None = None,
                        patch_frac: float | None = None, seed: int = 0, batch_size: int = 64,
                        workers: int | None = None) -> int:
    """Write :func:`~confidently.unadversarial.baselines.baseline_patches` of ``kind`` as a patch file (QR codes
    marked to be warped by nearest neighbour, so they stay crisp); returns the patch side."""
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    patches = baseline_patches(kind, model, dataset, side, seed=seed, batch_size=batch_size, workers=workers)
    save_patches(out, patches.clamp(0, 1), model, Placement(), baseline=kind, seed=seed,
                 warp="nearest" if kind == "qr" else "bilinear")
    return side


def stamp_records(records: Iterable[Record], patches_path, out, placement: Placement, *,
                  patch_class: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Paste on each record's image its label's patch (or ``patch_class``'s), placed from (seed, record id), and
    write the images to ``out`` (float N×C×H×W, one row at a time: memory is one image); returns each record
    pointing at its row, with the patch class and the placement."""
    tensors, meta = load_artifact(patches_path)
    patches = tensors.get("patches")
    if patches is None:
        raise InvalidInput(f"{patches_path} is not a patch file")
    warp = meta.get("warp", "bilinear")  # QR-code baselines stay crisp
    loader = ImageLoader(patches.shape[1])
    writer = ShardWriter(out)
    ids, stamped, shape = [], [], None
    try:
        for record in records:
            image = loader.load_field(record, "image")
            if patches.shape[-1] > min(image.shape[-2:]):
                raise record.error(f"the {patches.shape[-1]}-pixel patch is larger than the {image.shape[-2]}×"
                                   f"{image.shape[-1]} image", "image")
            if shape is not None and image.shape != shape:
                raise record.error("images differ in size; one output file holds one size (resize upstream)",
                                   "image")
            shape = image.shape
            cls = patch_class if patch_class is not None else record.data.get("label")
            if cls is None or not 0 <= cls < len(patches):
                raise record.error(f"no patch for class {cls!r} (the file has {len(patches)}); pass patch_class",
                                   "label")
            spot = placement.sample(1, record_generator(seed, record.id, "placement"))[0]
            writer.append(images=composite(image[None], patches[cls:cls + 1].float(), spot[None], warp))
            stamped.append({**record.data, "image": {"tensors": str(out), "key": "images", "index": len(ids)},
                            "patch_class": cls,
                            "placement": {"angle_deg": round(float(spot[0]), 4), "scale": round(float(spot[1]), 4),
                                          "dx": round(float(spot[2]), 4), "dy": round(float(spot[3]), 4)}})
            ids.append(record.id)
    except BaseException:
        writer.discard()
        raise
    writer.close(artifact_metadata(tool=TOOL, kind="patched", ids=ids, patches=str(patches_path), seed=seed),
                 empty={"images": (torch.float32, ())})
    return stamped


# ----------------------------------------------------------------------------------------- 3-D textures

@dataclass(frozen=True)
class TextureScene:
    """What a texture is optimised and evaluated over: the mesh (``builtin:NAME`` or a .ply/.obj with UVs), the
    samples per pixel, the camera distance (in bounding radii) and light ranges, the frame shift, cameras above
    the object only or all round, and the backgrounds (a registered name or a dataset of images)."""

    mesh: str
    spp: int = 4
    zoom: tuple[float, float] = (2.5, 5.0)
    light: tuple[float, float] = (0.7, 0.7)
    translate: float = 0.4
    hemisphere: bool = False
    backgrounds: str = "noise"

    def open(self, model: Classifier, tex_size: int, *, device: str = "auto", seed: int = 0, batch_size: int = 64,
             workers: int | None = None):
        """The renderer, the viewpoint distribution and the background source (a dataset's images are read
        once: at most :data:`MAX_BACKGROUNDS`, a sample seeded by ``seed``)."""
        renderer = MitsubaRenderer(self.mesh, tex_size, model.input_size[-1], self.spp, resolve_device(device))
        views = ViewSampler(self.zoom, self.light, self.translate, self.hemisphere)
        source = BACKGROUNDS.get(self.backgrounds) if self.backgrounds in BACKGROUNDS else \
            ImageBackgrounds(background_images(open_dataset(self.backgrounds), model, limit=MAX_BACKGROUNDS,
                                               seed=seed, batch_size=batch_size, workers=workers))
        return renderer, views, source


def train_texture_file(model: Classifier, class_id: int, scene: TextureScene, out, config: TextureConfig, *,
                       tex_size: int = 64, init: str = "const", seed: int = 0, device: str = "auto",
                       workers: int | None = None, on_step: OnStep | None = None,
                       model_file: str | None = None) -> dict[str, float]:
    """A ``tex_size`` texture for the mesh that the fixed model sees as ``class_id`` over the scene's random
    views, written to ``out`` with the whole rendering set-up (so render-3db can show what was optimised);
    returns the first and final losses."""
    renderer, views, source = scene.open(model, tex_size, device=device, seed=seed, batch_size=config.batch_size,
                                         workers=workers)
    generator = torch.Generator().manual_seed(seed)
    start = init_patches(1, 3, tex_size, generator, init)[0]
    result, losses = train_texture(model, renderer, class_id, start, views, source, config, generator,
                                   on_step=on_step)
    save_texture(out, result[None], [class_id], artifact_metadata(
        tool=TOOL, kind="texture", seed=seed,
        config={"mesh": scene.mesh, "mesh_id": renderer.mesh_id, "grad": config.grad, "renderer": "mitsuba",
                "spp": scene.spp, "camera": {"focal_length": renderer.focal_length},
                "engine": renderer.engine.describe(), "zoom": list(scene.zoom), "light": list(scene.light),
                "translate": scene.translate, "hemisphere": scene.hemisphere, "backgrounds": scene.backgrounds,
                "steps": config.steps, "lr": config.lr, "init": init, "batch_size": config.batch_size,
                "model_file": model_file}))
    return loss_summary(losses)


def evaluate_texture_file(model: Classifier, texture_path, scene: TextureScene, *, views_count: int = 100,
                          corruptions: Sequence[str] = (), severities: Sequence[int] = (), seed: int = 0,
                          batch_size: int = 64, device: str = "auto",
                          workers: int | None = None) -> Iterator[dict[str, Any]]:
    """For each texture of the file, accuracy on its class with a grey, a random (from ``seed``) and that
    texture, from the same ``views_count`` views drawn from ``seed`` (use another seed than training's),
    clean and under each corruption × severity; rows also name the class and the texture size."""
    textures, class_ids, _ = load_texture(texture_path, model.num_classes)
    side = textures.shape[-1]
    renderer, views, source = scene.open(model, side, device=device, seed=seed, batch_size=batch_size,
                                         workers=workers)
    for texture, class_id in zip(textures, class_ids.tolist(), strict=True):
        arms = {"grey": torch.full_like(texture, 0.5),
                "random": torch.rand(texture.shape, generator=torch.Generator().manual_seed(seed)),
                "unadv": texture}
        for row in evaluate_textures(model, renderer, class_id, arms, views, source, views_count, corruptions,
                                     severities, seed, batch_size):
            yield {**row, "class_id": class_id, "tex_size": side}


def export_pngs(out, *, texture_path=None, patches_path=None, flip_v: bool = False,
                force: bool = False) -> Iterator[dict[str, Any]]:
    """A texture file (for Blender, Unreal or AirSim) or a patch file (to print) as lossless 8-bit PNGs, rows top
    to bottom (``flip_v``: a texture's rows flipped, for tools whose row 0 is v = 0): ``out`` itself for one
    image, else ``NAME-<class>.png`` each; yields one row per file written."""
    if (texture_path is None) == (patches_path is None):
        raise UsageError("export takes one of texture_path T or patches_path P")
    if patches_path is not None and flip_v:
        raise UsageError("flip_v flips a texture's v axis; a patch has none (it is written as the model sees it)")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"`out` {out}: exports are written as lossless PNG; use a .png name")
    kind, source = ("texture", texture_path) if texture_path is not None else ("patches", patches_path)
    images, class_ids, _ = load_texture(source) if kind == "texture" else load_patch_file(source)
    paths = [out if len(images) == 1 else out.with_name(f"{out.stem}-{class_id}{out.suffix}")
             for class_id in class_ids.tolist()]
    for path in paths:
        guard_output(path, TOOL, force=force)
    for image, class_id, path in zip(images, class_ids.tolist(), paths, strict=True):
        save_image(image.flip(1) if flip_v else image, path, tool=TOOL)
        yield {"artifact": str(path), "class_id": class_id, "size": list(image.shape[1:]), "flip_v": flip_v,
               kind: str(source)}
