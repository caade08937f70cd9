"""`unadv-patch`: patches a fixed model recognises easily (unadversarial examples, thesis ch. 3)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import typer
from confidently import __version__
from confidently.cli import Common, common_options, input_source, run_app, tool_app
from confidently.data import ImageDataset, list_corruptions, open_dataset, open_source
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.atomic import guard_output
from confidently.io.images import ImageLoader, save_image
from confidently.io.records import RecordReader, RecordWriter
from confidently.models import load_model
from confidently.models.classifier import Classifier
from confidently.render import MitsubaRenderer, ViewSampler
from confidently.run import console, record_generator, resolve_device
from confidently.unadversarial import (
    BACKGROUNDS,
    MAX_BACKGROUNDS,
    ImageBackgrounds,
    PatchConfig,
    Placement,
    TextureConfig,
    background_images,
    best_images,
    check_labels,
    composite,
    eval_batches,
    evaluate_arms,
    evaluate_textures,
    init_patches,
    load_patch_file,
    load_texture,
    patch_side,
    qr_patches,
    random_image_picks,
    random_images,
    save_texture,
    train_patches,
    train_texture,
    training_batches,
)

app = tool_app("unadv-patch", "Unadversarial patches: stickers a fixed model recognises easily.")

PLACEMENT_HELP = "anywhere (±translate, the thesis), center, or region (with --region x0,y0,x1,y1)."


def make_placement(degrees: float, translate: float, scale: str, placement: str, region: str | None) -> Placement:
    try:
        low, high = (float(v) for v in scale.split(","))
        box = tuple(float(v) for v in region.split(",")) if region else (0.0, 0.0, 1.0, 1.0)
    except ValueError:
        raise UsageError("--scale LOW,HIGH and --region x0,y0,x1,y1 take comma-separated numbers") from None
    if len(box) != 4:
        raise UsageError(f"--region {region!r}: expected x0,y0,x1,y1")
    return Placement(degrees, translate, (low, high), placement, box)


def emit(record: dict[str, Any]) -> None:
    RecordWriter().write({"tool": "unadv-patch", "version": __version__, **record})


def save_patches(path: Path, patches: torch.Tensor, model: Classifier, placement: Placement, **extra: Any) -> None:
    save_artifact(path, {"patches": patches.float().contiguous(),
                         "class_ids": torch.arange(len(patches), dtype=torch.int64)},
                  artifact_metadata(tool="unadv-patch", kind="patch2d", image_size=list(model.input_size[1:]),
                                    patch_size=int(patches.shape[-1]), transform=placement.as_dict(),
                                    num_classes=model.num_classes, **extra))


def load_patches(path: Path, model: Classifier) -> tuple[torch.Tensor, dict[str, Any]]:
    """The patches of a file checked against the model, and the file's metadata."""
    patches, _, meta = load_patch_file(path)
    if len(patches) != model.num_classes:
        raise InvalidInput(f"{path} has {len(patches)} class patches but the model has {model.num_classes} classes")
    if patches.shape[1] != model.input_size[0] or patches.shape[-1] > min(model.input_size[1:]):
        raise InvalidInput(f"{path}: patches of shape {list(patches.shape[1:])} do not fit the model's "
                           f"{list(model.input_size)} inputs")
    return patches, meta


def model_and_data(model_path: Path, data: str, split: str | None, common: Common):
    """The model and the dataset (records only: images stream through the model's eval preprocessing later),
    its labels checked against the model (tar shards' labels as they stream)."""
    model = load_model(model_path, resolve_device(common.device))
    dataset = open_source(data, split, channels=model.input_size[0])
    if isinstance(dataset, ImageDataset):
        check_labels(dataset, model.num_classes, data)
    return model, dataset


PLACEMENT_OPTIONS = {
    "degrees": typer.Option(45.0, "--degrees", help="Rotation range ±degrees."),
    "translate": typer.Option(0.3, "--translate", help="anywhere: centre offset range ± this fraction."),
    "scale": typer.Option("0.9,1.1", "--scale", help="Isotropic scale range LOW,HIGH."),
    "placement": typer.Option("anywhere", "--placement", help=PLACEMENT_HELP),
    "region": typer.Option(None, "--region", help="region: normalised box x0,y0,x1,y1 for the patch centre."),
}
PLACEMENT_FIELDS = {"degrees": "degrees", "translate": "translate", "scale": "scale", "placement": "mode",
                    "region": "region"}  # option → Placement field


def chosen_placement(stored: Placement, given: Placement, explicit: set[str]) -> tuple[Placement, str]:
    """The patch file's placement with each field the user set (flag or --config) taken from ``given``,
    and where it came from: ``patches``, ``options`` or ``patches+options``."""
    overrides = {field: getattr(given, field) for option, field in PLACEMENT_FIELDS.items() if option in explicit}
    source = "patches" if not overrides else "options" if len(overrides) == len(PLACEMENT_FIELDS) \
        else "patches+options"
    return dataclasses.replace(stored, **overrides), source


def corruption_names(text: str | None, flag: str) -> list[str]:
    """``all``, a comma-separated list of registered corruptions, or nothing."""
    if not text or text == "none":
        return []
    names = list_corruptions() if text == "all" else [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in list_corruptions()]
    if unknown:
        raise UsageError(f"{flag} {','.join(unknown)}: choose from {', '.join(list_corruptions())}")
    return names


def severity_levels(text: str, flag: str) -> list[int]:
    try:
        levels = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected e.g. 1,3,5") from None
    if any(not 1 <= s <= 5 for s in levels):
        raise UsageError(f"{flag} {text!r}: severities run from 1 to 5")
    return levels


@app.command()
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def train(model_path: Path = typer.Option(..., "--model", help="The fixed classifier (.safetensors)."),
          data: str = typer.Option(..., "--data", help="Images to optimise on: manifest, folder, shard, demo:NAME."),
          split: str = typer.Option(None, "--split"),
          patch_size: int = typer.Option(None, "--patch-size", min=1, help="Patch side in pixels."),
          patch_frac: float = typer.Option(None, "--patch-frac", help="Patch area fraction (default 0.05)."),
          steps: int = typer.Option(300, "--steps", min=1),
          lr: float = typer.Option(0.02, "--lr"),
          optimizer: str = typer.Option("sign", "--optimizer", help="sign (the reference code) or adam."),
          init: str = typer.Option("rand", "--init", help="rand (N(0.5, 0.1²)) or const (0.5)."),
          degrees: float = PLACEMENT_OPTIONS["degrees"], translate: float = PLACEMENT_OPTIONS["translate"],
          scale: str = PLACEMENT_OPTIONS["scale"], placement: str = PLACEMENT_OPTIONS["placement"],
          region: str = PLACEMENT_OPTIONS["region"],
          train_corruptions: str = typer.Option(None, "--train-corruptions", help="Corruptions applied in the loop "
                                                "after compositing, one drawn per sample: all or a list of "
                                                f"{', '.join(list_corruptions())} (default none, as the thesis)."),
          train_severities: str = typer.Option("1,2,3,4,5", "--train-severities",
                                               help="Severities drawn for --train-corruptions."),
          train_corruption_prob: float = typer.Option(1.0, "--train-corruption-prob", min=0.0, max=1.0,
                                                      help="Fraction of samples corrupted in the loop."),
          out: Path = typer.Option(..., "--out", help="patches.safetensors (patches K×C×p×p, class_ids)."),
          force: bool = typer.Option(False, "--force", help="Write over an --out unadv-patch did not write."),
          *, common: Common) -> None:
    """One patch per class, optimised over random placement, rotation and scale; the model stays fixed.
    Each step takes the next --batch-size images of the data, shuffled each epoch by --seed (images of any
    size, resized and centre-cropped to the model's input)."""
    guard_output(out, "unadv-patch", force=force)
    in_loop = corruption_names(train_corruptions, "--train-corruptions")
    in_loop_levels = severity_levels(train_severities, "--train-severities")
    model, dataset = model_and_data(model_path, data, split, common)
    where = make_placement(degrees, translate, scale, placement, region)
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    generator = torch.Generator().manual_seed(common.seed)
    start = init_patches(model.num_classes, model.input_size[0], side, generator, init)
    config = PatchConfig(steps, common.batch_size, lr, optimizer, tuple(in_loop), tuple(in_loop_levels),
                         train_corruption_prob)
    batches = training_batches(dataset, model, config, common.seed, workers=common.workers)
    patches, losses = train_patches(model, batches, start, where, config, generator,
                                    on_step=lambda m: console.log(f"step {m['step']}: loss {m['loss']:.4f}"))
    save_patches(out, patches, model, where, optimizer=optimizer, lr=lr, steps=steps, seed=common.seed,
                 init=init, model_file=str(model_path), data=data, train_corruptions=in_loop,
                 train_severities=in_loop_levels if in_loop else [],
                 train_corruption_prob=train_corruption_prob if in_loop else 0.0)
    head, tail = losses[:max(1, steps // 10)], losses[-max(1, steps // 10):]
    emit({"cmd": "train", "artifact": str(out), "patch_size": side,
          "patch_frac": side * side / (model.input_size[1] * model.input_size[2]), "num_classes": model.num_classes,
          "steps": steps, "first_loss": sum(head) / len(head), "final_loss": sum(tail) / len(tail),
          "seed": common.seed})


@app.command("eval")
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def evaluate(model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(..., "--data"),
             split: str = typer.Option(None, "--split"),
             patches_path: Path = typer.Option(..., "--patches"),
             baselines: list[Path] = typer.Option(None, "--baseline", help="Other patch files (e.g. best-image)."),
             corruptions: str = typer.Option("all", "--corruptions", help=f"all or a list of: "
                                             f"{', '.join(list_corruptions())}."),
             severities: str = typer.Option("1,2,3,4,5", "--severities"),
             conflict: bool = typer.Option(False, "--conflict", help="Add rows with arm 'conflict': each image "
                                           "carries the unadversarial patch of a random other class; reports "
                                           "pred_image_frac and pred_patch_frac."),
             degrees: float = PLACEMENT_OPTIONS["degrees"], translate: float = PLACEMENT_OPTIONS["translate"],
             scale: str = PLACEMENT_OPTIONS["scale"], placement: str = PLACEMENT_OPTIONS["placement"],
             region: str = PLACEMENT_OPTIONS["region"],
             *, common: Common) -> None:
    """Accuracy of no patch / random patch / unadversarial patch / baselines × clean and each corruption.
    Patches land as they were trained (the placement stored in --patches); a placement option given
    overrides that field. Records carry the placement used and placement_source. The data streams (images of
    any size, resized and centre-cropped to the model's input); each image's noise, placement and conflict class
    come from (--seed, its id), as `apply` places them, so the counts do not depend on --batch-size, --workers
    or the order tar shards stream in."""
    names = corruption_names(corruptions, "--corruptions")
    levels = severity_levels(severities, "--severities")
    model, dataset = model_and_data(model_path, data, split, common)
    patches, meta = load_patches(patches_path, model)
    random = init_patches(len(patches), patches.shape[1], patches.shape[-1],
                          torch.Generator().manual_seed(int(meta.get("seed", 0))), meta.get("init", "rand"))
    arms: dict[str, torch.Tensor | None] = {"none": None, "random": random, "unadv": patches}
    warps = dict.fromkeys(("unadv", "conflict"), meta.get("warp", "bilinear"))
    for path in baselines or []:
        arms[path.stem], other = load_patches(path, model)
        warps[path.stem] = other.get("warp", "bilinear")
    where, source = chosen_placement(Placement.from_metadata(meta.get("transform"), str(patches_path)),
                                     make_placement(degrees, translate, scale, placement, region), common.explicit)
    batches = eval_batches(dataset, model, common.batch_size, workers=common.workers)
    for row in evaluate_arms(model, batches, arms, where, names, levels, common.seed, warps=warps,
                             conflict=patches if conflict else None):
        emit({"cmd": "eval", **row, "patch_size": int(patches.shape[-1]), "patches": str(patches_path),
              "model": str(model_path), "eval_seed": common.seed, "placement": where.as_dict(),
              "placement_source": source})


@app.command()
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def baseline(kind: str = typer.Argument(..., help="best-image, random-image, noise or qr."),
             model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(None, "--data", help="Training images (every kind but qr)."),
             split: str = typer.Option(None, "--split"),
             patch_size: int = typer.Option(None, "--patch-size", min=1),
             patch_frac: float = typer.Option(None, "--patch-frac"),
             out: Path = typer.Option(..., "--out"),
             force: bool = typer.Option(False, "--force", help="Write over an --out unadv-patch did not write."),
             *, common: Common) -> None:
    """Patches to compare against (thesis §3.2): each class's easiest training image (the model's highest
    confidence in its class; the data streams, one best image per class kept), a random one (per class the
    image whose derive_seed(--seed, id, "random-image") is smallest: chosen from the records, so only those
    images are read), noise, or the QR code of the class index (needs the `qrcode` package; warped by
    nearest neighbour in eval)."""
    if kind not in ("best-image", "random-image", "noise", "qr"):
        raise UsageError(f"baseline {kind!r}: choose best-image, random-image, noise or qr")
    guard_output(out, "unadv-patch", force=force)
    if kind == "qr":
        model = load_model(model_path, resolve_device(common.device))
    elif data is None:
        raise UsageError(f"baseline {kind} needs --data (the training images)")
    else:
        model, dataset = model_and_data(model_path, data, split, common)
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    generator = torch.Generator().manual_seed(common.seed)
    if kind == "best-image":
        patches = best_images(model, eval_batches(dataset, model, common.batch_size, workers=common.workers),
                              model.num_classes, side)
    elif kind == "random-image":
        if not isinstance(dataset, ImageDataset):
            raise UsageError(f"baseline random-image picks records by id and cannot read {data} in order; pack "
                             "the images with `dataset pack SRC --out DIR --format safetensors` and pass DIR")
        picked = dataset.subset(random_image_picks(dataset.ids, dataset.labels, model.num_classes, common.seed))
        patches = random_images(eval_batches(picked, model, common.batch_size, workers=common.workers),
                                model.num_classes, side, common.seed)
    elif kind == "noise":
        patches = (0.5 + 0.2 * torch.randn(model.num_classes, model.input_size[0], side, side,
                                           generator=generator)).clamp(0, 1)
    else:
        patches = qr_patches(model.num_classes, side, model.input_size[0])
    save_patches(out, patches.clamp(0, 1), model, Placement(), baseline=kind, seed=common.seed,
                 warp="nearest" if kind == "qr" else "bilinear")
    emit({"cmd": "baseline", "kind": kind, "artifact": str(out), "patch_size": side})


@app.command()
@common_options(uses={"seed"})
def apply(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          patches_path: Path = typer.Option(..., "--patches"),
          patch_class: int = typer.Option(None, "--patch-class", help="Stamp this class's patch (default: the label)."),
          degrees: float = PLACEMENT_OPTIONS["degrees"], translate: float = PLACEMENT_OPTIONS["translate"],
          scale: str = PLACEMENT_OPTIONS["scale"], placement: str = PLACEMENT_OPTIONS["placement"],
          region: str = PLACEMENT_OPTIONS["region"],
          out: Path = typer.Option(..., "--out", help="patched.safetensors (images float N×C×H×W)."),
          force: bool = typer.Option(False, "--force", help="Write over an --out unadv-patch did not write."),
          *, common: Common) -> None:
    """Stamp patches on a stream of images for other tools; each placement comes from (seed, id) and is recorded."""
    guard_output(out, "unadv-patch", force=force)
    tensors, meta = load_artifact(patches_path)
    patches = tensors.get("patches")
    if patches is None:
        raise InvalidInput(f"{patches_path} is not a patch file")
    where = make_placement(degrees, translate, scale, placement, region)
    warp = meta.get("warp", "bilinear")  # QR-code baselines stay crisp
    loader = ImageLoader(patches.shape[1])
    records = list(RecordReader(input_source(source, "image records"), require_image=True))
    images, rows = [], []
    for record in records:
        image = loader.load_field(record, "image")
        if patches.shape[-1] > min(image.shape[-2:]):
            raise record.error(f"the {patches.shape[-1]}-pixel patch is larger than the {image.shape[-2]}×"
                               f"{image.shape[-1]} image", "image")
        if images and image.shape != images[0].shape:
            raise record.error("images differ in size; one output file holds one size (resize upstream)", "image")
        cls = patch_class if patch_class is not None else record.data.get("label")
        if cls is None or not 0 <= cls < len(patches):
            raise record.error(f"no patch for class {cls!r} (the file has {len(patches)}); pass --patch-class", "label")
        spot = where.sample(1, record_generator(common.seed, record.id, "placement"))[0]
        images.append(composite(image[None], patches[cls:cls + 1].float(), spot[None], warp)[0])
        rows.append((record, cls, spot))
    save_artifact(out, {"images": torch.stack(images) if images else torch.zeros(0)},
                  artifact_metadata(tool="unadv-patch", kind="patched", ids=[r.id for r, _, _ in rows],
                                    patches=str(patches_path), seed=common.seed))
    writer = RecordWriter()
    for index, (record, cls, spot) in enumerate(rows):
        writer.write({**record.data, "image": {"tensors": str(out), "key": "images", "index": index},
                      "patch_class": cls,
                      "placement": {"angle_deg": round(float(spot[0]), 4), "scale": round(float(spot[1]), 4),
                                    "dx": round(float(spot[2]), 4), "dy": round(float(spot[3]), 4)}})


TEXTURE_VIEW_OPTIONS = {
    "mesh": typer.Option(..., "--mesh", help="builtin:NAME (render-3db's built-in objects: cube, sphere, mug...), or a "
                        ".ply/.obj file with UV coordinates."),
    "tex_size": typer.Option(64, "--tex-size", min=2, help="Texture side in texels."),
    "spp": typer.Option(4, "--spp", min=1, help="Samples per pixel of each render."),
    "zoom_min": typer.Option(2.5, "--zoom-min", help="Closest camera distance, in bounding radii of the mesh."),
    "zoom_max": typer.Option(5.0, "--zoom-max", help="Farthest camera distance, in bounding radii."),
    "hemisphere": typer.Option(False, "--hemisphere", help="Cameras only above the object (z > 0)."),
    "light_min": typer.Option(0.7, "--light-min", help="Environment radiance, lowest (the thesis: 0.7)."),
    "light_max": typer.Option(0.7, "--light-max", help="Environment radiance, highest."),
    "translate": typer.Option(0.4, "--translate", help="Random shift of the frame, ± this fraction (the thesis: 0.4)."),
    "backgrounds": typer.Option("noise", "--backgrounds", help="noise, solid, black, environment (the light's own "
                                "colour, as render-3db shows a solid environment), or a dataset of images "
                                f"(manifest, folder, shard, demo:NAME; at most {MAX_BACKGROUNDS} of its images are "
                                "read, a sample seeded by --seed when it has more)."),
}


def texture_scene(model: Classifier, mesh: str, tex_size: int, spp: int, zoom_min: float, zoom_max: float,
                  hemisphere: bool, light_min: float, light_max: float, translate: float, backgrounds: str,
                  common: Common):
    """The renderer, viewpoint distribution and background source shared by `texture` and `eval-texture`."""
    renderer = MitsubaRenderer(mesh, tex_size, model.input_size[-1], spp, resolve_device(common.device))
    views = ViewSampler((zoom_min, zoom_max), (light_min, light_max), translate, hemisphere)
    source = BACKGROUNDS.get(backgrounds) if backgrounds in BACKGROUNDS else \
        ImageBackgrounds(background_images(open_dataset(backgrounds), model, limit=MAX_BACKGROUNDS, seed=common.seed,
                                           batch_size=common.batch_size, workers=common.workers))
    return renderer, views, source


@app.command()
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def texture(model_path: Path = typer.Option(..., "--model", help="The fixed classifier (.safetensors)."),
            class_id: int = typer.Option(..., "--class-id", min=0, help="The class the object must be seen as."),
            grad: str = typer.Option("ad", "--grad", help="ad (through Mitsuba), uv (the thesis's UV-map "
                                     "approximation backward) or uv-only (approximation forward too)."),
            steps: int = typer.Option(100, "--steps", min=1),
            lr: float = typer.Option(0.01, "--lr", help="Signed-step size (the thesis's 3-D config: 0.01)."),
            init: str = typer.Option("const", "--init", help="const (0.5 grey, the thesis) or rand."),
            mesh: str = TEXTURE_VIEW_OPTIONS["mesh"], tex_size: int = TEXTURE_VIEW_OPTIONS["tex_size"],
            spp: int = TEXTURE_VIEW_OPTIONS["spp"], zoom_min: float = TEXTURE_VIEW_OPTIONS["zoom_min"],
            zoom_max: float = TEXTURE_VIEW_OPTIONS["zoom_max"], hemisphere: bool = TEXTURE_VIEW_OPTIONS["hemisphere"],
            light_min: float = TEXTURE_VIEW_OPTIONS["light_min"], light_max: float = TEXTURE_VIEW_OPTIONS["light_max"],
            translate: float = TEXTURE_VIEW_OPTIONS["translate"],
            backgrounds: str = TEXTURE_VIEW_OPTIONS["backgrounds"],
            out: Path = typer.Option(..., "--out", help="texture.safetensors (texture 1×3×s×s, class_ids)."),
            force: bool = typer.Option(False, "--force", help="Write over an --out unadv-patch did not write."),
            *, common: Common) -> None:
    """Optimise a mesh's UV texture so the fixed model sees class C, rendering with Mitsuba 3 over random
    viewpoints, light, frame shifts and backgrounds, through render-3db's mitsuba engine (its path tracer, 50 mm
    camera and sRGB view transform, so render-3db evaluates what was optimised). Views per step: --batch-size
    (default 8 here)."""
    guard_output(out, "unadv-patch", force=force)
    model = load_model(model_path, resolve_device(common.device))
    if class_id >= model.num_classes:
        raise UsageError(f"--class-id {class_id}: the model has {model.num_classes} classes "
                         f"(0..{model.num_classes - 1})")
    renderer, views, source = texture_scene(model, mesh, tex_size, spp, zoom_min, zoom_max, hemisphere, light_min,
                                            light_max, translate, backgrounds, common)
    generator = torch.Generator().manual_seed(common.seed)
    start = init_patches(1, 3, tex_size, generator, init)[0]
    batch = common.batch_size if "batch_size" in common.explicit else 8
    config = TextureConfig(steps, batch, lr, grad)
    result, losses = train_texture(model, renderer, class_id, start, views, source, config, generator,
                                   on_step=lambda m: console.log(f"step {m['step']}: loss {m['loss']:.4f} "
                                                                 f"({m['seconds']:.0f} s)"))
    save_texture(out, result[None], [class_id], artifact_metadata(
        tool="unadv-patch", kind="texture", seed=common.seed,
        config={"mesh": mesh, "mesh_id": renderer.mesh_id, "grad": grad, "renderer": "mitsuba", "spp": spp,
                "camera": {"focal_length": renderer.focal_length}, "engine": renderer.engine.describe(),
                "zoom": [zoom_min, zoom_max], "light": [light_min, light_max], "translate": translate,
                "hemisphere": hemisphere, "backgrounds": backgrounds, "steps": steps, "lr": lr, "init": init,
                "batch_size": batch, "model_file": str(model_path)}))
    head, tail = losses[:max(1, steps // 10)], losses[-max(1, steps // 10):]
    emit({"cmd": "texture", "artifact": str(out), "class_id": class_id, "mesh": mesh, "grad": grad,
          "tex_size": tex_size, "steps": steps, "first_loss": sum(head) / len(head),
          "final_loss": sum(tail) / len(tail), "seed": common.seed})


@app.command("eval-texture")
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def eval_texture(model_path: Path = typer.Option(..., "--model"),
                 texture_path: Path = typer.Option(..., "--texture", help="From `unadv-patch texture`."),
                 views_count: int = typer.Option(100, "--views", min=1, help="Held-out viewpoints per arm."),
                 corruptions: str = typer.Option(None, "--corruptions", help="all or a list; default none."),
                 severities: str = typer.Option("1,2,3,4,5", "--severities"),
                 mesh: str = TEXTURE_VIEW_OPTIONS["mesh"], spp: int = TEXTURE_VIEW_OPTIONS["spp"],
                 zoom_min: float = TEXTURE_VIEW_OPTIONS["zoom_min"], zoom_max: float = TEXTURE_VIEW_OPTIONS["zoom_max"],
                 hemisphere: bool = TEXTURE_VIEW_OPTIONS["hemisphere"],
                 light_min: float = TEXTURE_VIEW_OPTIONS["light_min"],
                 light_max: float = TEXTURE_VIEW_OPTIONS["light_max"],
                 translate: float = TEXTURE_VIEW_OPTIONS["translate"],
                 backgrounds: str = TEXTURE_VIEW_OPTIONS["backgrounds"],
                 *, common: Common) -> None:
    """Accuracy on the texture's class for grey / random / unadversarial textures, from the same held-out
    viewpoints (drawn from --seed, so use a seed other than training's), clean and under corruptions."""
    model = load_model(model_path, resolve_device(common.device))
    textures, class_ids, meta = load_texture(texture_path, model.num_classes)
    renderer, views, source = texture_scene(model, mesh, textures.shape[-1], spp, zoom_min, zoom_max, hemisphere,
                                            light_min, light_max, translate, backgrounds, common)
    names = corruption_names(corruptions, "--corruptions")
    levels = severity_levels(severities, "--severities") if names else []
    side = textures.shape[-1]
    for texture, class_id in zip(textures, class_ids.tolist(), strict=True):
        arms = {"grey": torch.full_like(texture, 0.5),
                "random": torch.rand(texture.shape, generator=torch.Generator().manual_seed(common.seed)),
                "unadv": texture}
        for row in evaluate_textures(model, renderer, class_id, arms, views, source, views_count, names, levels,
                                     common.seed, common.batch_size):
            emit({"cmd": "eval-texture", **row, "class_id": class_id, "tex_size": side, "mesh": mesh,
                  "texture": str(texture_path), "model": str(model_path), "eval_seed": common.seed})


@app.command()
@common_options()
def export(texture_path: Path = typer.Option(None, "--texture", help="From `unadv-patch texture`."),
           patches_path: Path = typer.Option(None, "--patches", help="From `unadv-patch train` or `baseline`: "
                                             "one sticker per class, to print."),
           out: Path = typer.Option(..., "--out", help="PNG to write (one per class: NAME-<class>.png if several)."),
           flip_v: bool = typer.Option(False, "--flip-v", help="Flip a texture's rows, for tools whose image row 0 "
                                       "is v = 0 (not needed for Blender, Unreal or AirSim with OBJ/PLY meshes)."),
           force: bool = typer.Option(False, "--force", help="Write over an --out unadv-patch did not write."),
           *, common: Common) -> None:
    """Texture (for Blender, Unreal or AirSim) or patches (to print) to PNG: rows top→bottom, lossless 8-bit."""
    if (texture_path is None) == (patches_path is None):
        raise UsageError("export takes one of --texture T or --patches P")
    if patches_path is not None and flip_v:
        raise UsageError("--flip-v flips a texture's v axis; a patch has none (it is written as the model sees it)")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: exports are written as lossless PNG; use a .png name")
    kind, source = ("texture", texture_path) if texture_path is not None else ("patches", patches_path)
    images, class_ids, _ = load_texture(source) if kind == "texture" else load_patch_file(source)
    paths = [out if len(images) == 1 else out.with_name(f"{out.stem}-{class_id}{out.suffix}")
             for class_id in class_ids.tolist()]
    for path in paths:
        guard_output(path, "unadv-patch", force=force)
    for image, class_id, path in zip(images, class_ids.tolist(), paths, strict=True):
        save_image(image.flip(1) if flip_v else image, path, tool="unadv-patch")
        emit({"cmd": "export", "artifact": str(path), "class_id": class_id, "size": list(image.shape[1:]),
              "flip_v": flip_v, kind: str(source)})


# ---------------------------------------------------------------------------------------------------------
# `unadv-patch airsim eval|land|serve-fake`: evaluation in a running AirSim simulator (spec §2.8, §4.3).
# The client is imported lazily (confidently.unadversarial.airsim); serve-fake is a test double.

airsim_app = typer.Typer(name="airsim", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                         rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
                         help="Evaluate textures in a running AirSim simulator through its official client "
                              "(`serve-fake` is a loopback test double, not AirSim).")
app.add_typer(airsim_app, name="airsim")

AIRSIM_OPTIONS = {
    "host": typer.Option("127.0.0.1", "--host", help="The simulator's address."),
    "port": typer.Option(41451, "--port", min=0, max=65535, help="The simulator's RPC port (AirSim: 41451)."),
    "connect_timeout": typer.Option(10.0, "--connect-timeout", min=0.01,
                                    help="Seconds to wait for the simulator to answer; then exit 3."),
    "timeout": typer.Option(60.0, "--timeout", min=1, help="Seconds allowed per simulator call once connected."),
    "weather": typer.Option(None, "--weather", help="NAME:V1,V2,... (fog, dust, snow, rain, ...; values in [0,1]); "
                                                    "each value is one setting; repeatable. Default: clear."),
    "texture_png": typer.Option(None, "--texture-png", help="Unadversarial texture PNG (a path on the simulator's "
                                                            "host): adds the `unadv` arm."),
    "original_png": typer.Option(None, "--original-png", help="PNG re-applied for the `original` arm (default: "
                                                              "the scene's own material; that arm runs first)."),
    "camera": typer.Option("0", "--camera", help="Camera name (AirSim's front camera is 0)."),
}


def airsim_connect(host: str, port: int, connect_timeout: float, timeout: float):
    from confidently.unadversarial.airsim import Simulator

    sim = Simulator.connect(host, port, connect_timeout=connect_timeout, timeout=timeout)
    console.log(f"connected to {host}:{port} ({sim.kind}): {sim.confirm()}")
    if sim.kind == "fake":
        console.log("this is the serve-fake test double: its records are marked simulator=fake, not AirSim results")
    return sim


def airsim_arms(texture_png: str | None, original_png: str | None) -> dict[str, str | None]:
    """Arm → texture path as the simulator will read it (absolute when the file is here too)."""
    def on_host(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    arms = {"original": on_host(original_png)}
    if texture_png:
        arms["unadv"] = on_host(texture_png)
    return arms


@airsim_app.command("eval")
@common_options(uses={"seed", "device", "batch_size", "deterministic"})
def airsim_eval(host: str = AIRSIM_OPTIONS["host"], port: int = AIRSIM_OPTIONS["port"],
                connect_timeout: float = AIRSIM_OPTIONS["connect_timeout"], timeout: float = AIRSIM_OPTIONS["timeout"],
                object_name: str = typer.Option(..., "--object", help="The scene object to move and texture."),
                texture_png: str = AIRSIM_OPTIONS["texture_png"], original_png: str = AIRSIM_OPTIONS["original_png"],
                model_path: Path = typer.Option(..., "--model", help="The classifier (.safetensors)."),
                class_id: int = typer.Option(..., "--class-id", help="The object's true class."),
                locations: int = typer.Option(5, "--locations", min=1, help="Object locations (random, seeded)."),
                grid: int = typer.Option(10, "--grid", min=1, help="n: an n×n×n camera grid per location."),
                spread: float = typer.Option(5.0, "--spread", help="Locations: uniform in ±spread m around the start."),
                radius: float = typer.Option(4.0, "--radius", help="Camera grid half-width in x and y, metres."),
                heights: str = typer.Option("2,6", "--heights", help="Camera heights above the object LOW,HIGH m."),
                weather: list[str] = AIRSIM_OPTIONS["weather"],
                topk: int = typer.Option(5, "--topk", min=1),
                camera: str = AIRSIM_OPTIONS["camera"],
                *, common: Common) -> None:
    """Classify the object from every grid viewpoint: one record per frame, then one summary per arm × weather."""
    from confidently.unadversarial.airsim import GridSpec, grid_eval, parse_weather, summarize_frames

    try:
        low, high = (float(v) for v in heights.split(","))
    except ValueError:
        raise UsageError(f"--heights {heights!r}: expected LOW,HIGH metres, e.g. 2,6") from None
    spec = GridSpec(locations, grid, spread, radius, (low, high))
    settings = parse_weather(weather)
    model = load_model(model_path, resolve_device(common.device))
    if not 0 <= class_id < model.num_classes:
        raise UsageError(f"--class-id {class_id}: the model has classes 0..{model.num_classes - 1}")
    with airsim_connect(host, port, connect_timeout, timeout) as sim:
        frames = []
        for record in grid_eval(sim, model, object_name, class_id, arms=airsim_arms(texture_png, original_png),
                                weather=settings, spec=spec, topk=topk, seed=common.seed,
                                batch_size=common.batch_size, camera=camera):
            frames.append(record)
            emit({**record, "model": str(model_path)})
        for row in summarize_frames(frames, topk):
            emit({**row, "model": str(model_path), "seed": common.seed})


@airsim_app.command("land")
@common_options(uses={"seed", "device", "deterministic"})
def airsim_land(host: str = AIRSIM_OPTIONS["host"], port: int = AIRSIM_OPTIONS["port"],
                connect_timeout: float = AIRSIM_OPTIONS["connect_timeout"], timeout: float = AIRSIM_OPTIONS["timeout"],
                pad: str = typer.Option("LandingPad", "--pad", help="The landing pad object."),
                regressor: str = typer.Option(..., "--regressor", help="Pad regressor model file (2 outputs: the pad's "
                                              "x, y minus the drone's, metres; see README) or `oracle` "
                                              "(simulator ground truth)."),
                kp: float = typer.Option(5.0, "--kp"), kd: float = typer.Option(5.0, "--kd"),
                ki: float = typer.Option(0.0, "--ki"),
                episodes: int = typer.Option(1, "--episodes", min=1, help="Per arm × weather (paired starts)."),
                weather: list[str] = AIRSIM_OPTIONS["weather"],
                texture_png: str = AIRSIM_OPTIONS["texture_png"], original_png: str = AIRSIM_OPTIONS["original_png"],
                dt: float = typer.Option(0.1, "--dt", help="Control period (velocity command duration), s."),
                start_alt: float = typer.Option(5.0, "--start-alt", help="Start height above the pad, m."),
                start_radius: float = typer.Option(2.0, "--start-radius", help="Start offset: uniform in a disc, m."),
                descent: float = typer.Option(0.5, "--descent", help="Descent speed, m/s."),
                land_alt: float = typer.Option(0.5, "--land-alt", help="Hand over to landAsync below this height, m."),
                max_time: float = typer.Option(30.0, "--max-time", help="Control time limit per episode, s."),
                max_speed: float = typer.Option(5.0, "--max-speed", help="Horizontal speed limit, m/s."),
                success_radius: float = typer.Option(0.5, "--success-radius", help="Landed within this of the pad "
                                                     "centre, m."),
                camera: str = AIRSIM_OPTIONS["camera"],
                *, common: Common) -> None:
    """PID landing on the pad from a downward camera: one record per episode, then a summary per arm × weather."""
    from confidently.unadversarial.airsim import (
        LandingConfig,
        OracleRegressor,
        land_episode,
        load_regressor,
        parse_weather,
        start_offset,
    )

    config = LandingConfig(kp, kd, ki, dt, start_alt, start_radius, descent, land_alt, max_time, max_speed,
                           success_radius, camera)
    settings = parse_weather(weather)
    learned = None if regressor == "oracle" else load_regressor(regressor, resolve_device(common.device))
    with airsim_connect(host, port, connect_timeout, timeout) as sim:
        estimator = learned if learned is not None else OracleRegressor(sim, pad)
        try:
            for arm, texture in airsim_arms(texture_png, original_png).items():
                if texture is not None:
                    sim.set_texture(pad, texture)
                for setting in settings:
                    sim.set_weather(setting)
                    rows = []
                    for episode in range(episodes):
                        result = land_episode(sim, estimator, pad, config,
                                              start_offset(common.seed, episode, start_radius))
                        rows.append(result)
                        emit({"cmd": "airsim-land", "simulator": sim.kind, "pad": pad, "arm": arm,
                              "weather": setting, "episode": episode, **result, "regressor": regressor,
                              "kp": kp, "kd": kd, "ki": ki, "dt": dt, "seed": common.seed})
                    landed = [r for r in rows if r["landed"]]
                    emit({"cmd": "airsim-land-summary", "simulator": sim.kind, "pad": pad, "arm": arm,
                          "weather": setting, "n": len(rows), "success_rate": len(landed) / len(rows),
                          "mean_time_s": sum(r["time_s"] for r in landed) / len(landed) if landed else None,
                          "mean_final_err_m": round(sum(r["final_err_m"] for r in rows) / len(rows), 4),
                          "regressor": regressor, "seed": common.seed})
        finally:
            try:
                sim.set_weather({})
            except Exception:  # keep the error that ended the run
                pass


@airsim_app.command("serve-fake")
@common_options(uses={"seed"})
def airsim_serve_fake(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
                      port: int = typer.Option(41451, "--port", min=0, max=65535, help="0 picks a free port."),
                      width: int = typer.Option(64, "--width", min=8),
                      height: int = typer.Option(64, "--height", min=8),
                      fov: float = typer.Option(90.0, "--fov", help="Horizontal field of view, degrees."),
                      *, common: Common) -> None:
    """A loopback msgpack-rpc stand-in for AirSim (TEST DOUBLE, numpy renderer): prints one JSON record with
    the bound host/port, then serves until killed. Records made against it say simulator=fake."""
    from confidently.unadversarial.airsim_fake import FakeSimulator, serve_fake

    try:
        server = serve_fake(host, port, sim=FakeSimulator(width=width, height=height, fov_deg=fov, seed=common.seed))
    except OSError as exc:
        raise UsageError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    emit({"cmd": "airsim-serve-fake", "simulator": "fake", "host": server.host, "port": server.port,
          "objects": sorted(server.sim.objects), "width": width, "height": height,
          "note": "test double for the AirSim client path; not AirSim"})
    console.log(f"fake AirSim (test double) listening on {server.host}:{server.port}; Ctrl-C to stop")
    server.serve_forever()


def main() -> None:
    run_app(app, "unadv-patch")


if __name__ == "__main__":
    main()
