"""`unadv-patch`: patches a fixed model recognises easily (unadversarial examples, thesis ch. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import typer
from confidently import __version__
from confidently.cli import Common, common_options, input_source, run_app, tool_app
from confidently.data import list_corruptions, open_dataset
from confidently.errors import InvalidInput, UsageError
from confidently.io.artifacts import artifact_metadata, load_artifact, save_artifact
from confidently.io.images import ImageLoader
from confidently.io.records import RecordReader, RecordWriter
from confidently.models import load_model
from confidently.models.classifier import Classifier
from confidently.run import console, record_generator, resolve_device
from confidently.unadversarial import (
    PatchConfig,
    Placement,
    best_images,
    composite,
    evaluate_arms,
    init_patches,
    patch_side,
    train_patches,
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
    tensors, meta = load_artifact(path)
    patches = tensors.get("patches")
    if patches is None or patches.ndim != 4:
        raise InvalidInput(f"{path} is not a patch file (needs 'patches' K×C×p×p from `unadv-patch train`)")
    if len(patches) != model.num_classes:
        raise InvalidInput(f"{path} has {len(patches)} class patches but the model has {model.num_classes} classes")
    if patches.shape[1] != model.input_size[0] or patches.shape[-1] > min(model.input_size[1:]):
        raise InvalidInput(f"{path}: patches of shape {list(patches.shape[1:])} do not fit the model's "
                           f"{list(model.input_size)} inputs")
    if float(patches.min()) < 0 or float(patches.max()) > 1:
        raise InvalidInput(f"{path}: patch values lie outside [0, 1]")
    return patches.float(), meta


def model_and_data(model_path: Path, data: str, split: str | None, common: Common):
    model = load_model(model_path, resolve_device(common.device))
    dataset = open_dataset(data, split)
    images, labels = dataset.tensors(model.input_size[-1])
    if bool((labels < 0).any()):
        raise InvalidInput(f"{data}: every row needs a label", field="label")
    if int(labels.max()) >= model.num_classes:
        raise InvalidInput(f"{data} has labels up to {int(labels.max())}; the model has {model.num_classes} classes")
    model.check_input(images[:1])
    return model, images, labels


PLACEMENT_OPTIONS = {
    "degrees": typer.Option(45.0, "--degrees", help="Rotation range ±degrees."),
    "translate": typer.Option(0.3, "--translate", help="anywhere: centre offset range ± this fraction."),
    "scale": typer.Option("0.9,1.1", "--scale", help="Isotropic scale range LOW,HIGH."),
    "placement": typer.Option("anywhere", "--placement", help=PLACEMENT_HELP),
    "region": typer.Option(None, "--region", help="region: normalised box x0,y0,x1,y1 for the patch centre."),
}


@app.command()
@common_options
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
          out: Path = typer.Option(..., "--out", help="patches.safetensors (patches K×C×p×p, class_ids)."),
          *, common: Common) -> None:
    """One patch per class, optimised over random placement, rotation and scale; the model stays fixed."""
    model, images, labels = model_and_data(model_path, data, split, common)
    where = make_placement(degrees, translate, scale, placement, region)
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    generator = torch.Generator().manual_seed(common.seed)
    start = init_patches(model.num_classes, model.input_size[0], side, generator, init)
    config = PatchConfig(steps, min(common.batch_size, len(images)), lr, optimizer)
    patches, losses = train_patches(model, images, labels, start, where, config, generator,
                                    on_step=lambda m: console.log(f"step {m['step']}: loss {m['loss']:.4f}"))
    save_patches(out, patches, model, where, optimizer=optimizer, lr=lr, steps=steps, seed=common.seed,
                 init=init, model_file=str(model_path), data=data)
    head, tail = losses[:max(1, steps // 10)], losses[-max(1, steps // 10):]
    emit({"cmd": "train", "artifact": str(out), "patch_size": side,
          "patch_frac": side * side / (model.input_size[1] * model.input_size[2]), "num_classes": model.num_classes,
          "steps": steps, "first_loss": sum(head) / len(head), "final_loss": sum(tail) / len(tail),
          "seed": common.seed})


@app.command("eval")
@common_options
def evaluate(model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(..., "--data"),
             split: str = typer.Option(None, "--split"),
             patches_path: Path = typer.Option(..., "--patches"),
             baselines: list[Path] = typer.Option(None, "--baseline", help="Other patch files (e.g. best-image)."),
             corruptions: str = typer.Option("all", "--corruptions", help=f"all or a list of: "
                                             f"{', '.join(list_corruptions())}."),
             severities: str = typer.Option("1,2,3,4,5", "--severities"),
             degrees: float = PLACEMENT_OPTIONS["degrees"], translate: float = PLACEMENT_OPTIONS["translate"],
             scale: str = PLACEMENT_OPTIONS["scale"], placement: str = PLACEMENT_OPTIONS["placement"],
             region: str = PLACEMENT_OPTIONS["region"],
             *, common: Common) -> None:
    """Accuracy of no patch / random patch / unadversarial patch / baselines × clean and each corruption."""
    model, images, labels = model_and_data(model_path, data, split, common)
    patches, meta = load_patches(patches_path, model)
    names = list_corruptions() if corruptions == "all" else [c.strip() for c in corruptions.split(",") if c.strip()]
    unknown = [c for c in names if c not in list_corruptions()]
    if unknown:
        raise UsageError(f"--corruptions {','.join(unknown)}: choose from {', '.join(list_corruptions())}")
    try:
        levels = [int(s) for s in severities.split(",")]
    except ValueError:
        raise UsageError(f"--severities {severities!r}: expected e.g. 1,3,5") from None
    random = init_patches(len(patches), patches.shape[1], patches.shape[-1],
                          torch.Generator().manual_seed(int(meta.get("seed", 0))), meta.get("init", "rand"))
    arms: dict[str, torch.Tensor | None] = {"none": None, "random": random, "unadv": patches}
    for path in baselines or []:
        arms[path.stem] = load_patches(path, model)[0]
    where = make_placement(degrees, translate, scale, placement, region)
    for row in evaluate_arms(model, images, labels, arms, where, names, levels, common.seed, common.batch_size):
        emit({"cmd": "eval", **row, "patch_size": int(patches.shape[-1]), "patches": str(patches_path),
              "model": str(model_path), "eval_seed": common.seed})


@app.command()
@common_options
def baseline(kind: str = typer.Argument(..., help="best-image, random-image or noise."),
             model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(..., "--data"),
             split: str = typer.Option(None, "--split"),
             patch_size: int = typer.Option(None, "--patch-size", min=1),
             patch_frac: float = typer.Option(None, "--patch-frac"),
             out: Path = typer.Option(..., "--out"),
             *, common: Common) -> None:
    """Patches to compare against (thesis §3.2): each class's easiest training image, a random one, or noise."""
    model, images, labels = model_and_data(model_path, data, split, common)
    side = patch_side(*model.input_size[1:], patch_size, patch_frac)
    generator = torch.Generator().manual_seed(common.seed)
    if kind == "best-image":
        patches = best_images(model, images, labels, model.num_classes, side)
    elif kind == "random-image":
        picks = [torch.nonzero(labels == c).flatten() for c in range(model.num_classes)]
        if any(len(p) == 0 for p in picks):
            raise InvalidInput("every class needs a training image for a random-image patch")
        chosen = [p[torch.randint(0, len(p), (1,), generator=generator)] for p in picks]
        patches = torch.nn.functional.interpolate(images[torch.cat(chosen)], size=(side, side), mode="area")
    elif kind == "noise":
        patches = (0.5 + 0.2 * torch.randn(model.num_classes, model.input_size[0], side, side,
                                           generator=generator)).clamp(0, 1)
    else:
        raise UsageError(f"baseline {kind!r}: choose best-image, random-image or noise")
    save_patches(out, patches.clamp(0, 1), model, Placement(), baseline=kind, seed=common.seed)
    emit({"cmd": "baseline", "kind": kind, "artifact": str(out), "patch_size": side})


@app.command()
@common_options
def apply(source: str = typer.Argument(None, help="Image records (JSONL file, or - / stdin)."),
          patches_path: Path = typer.Option(..., "--patches"),
          patch_class: int = typer.Option(None, "--patch-class", help="Stamp this class's patch (default: the label)."),
          degrees: float = PLACEMENT_OPTIONS["degrees"], translate: float = PLACEMENT_OPTIONS["translate"],
          scale: str = PLACEMENT_OPTIONS["scale"], placement: str = PLACEMENT_OPTIONS["placement"],
          region: str = PLACEMENT_OPTIONS["region"],
          out: Path = typer.Option(..., "--out", help="patched.safetensors (images float N×C×H×W)."),
          *, common: Common) -> None:
    """Stamp patches on a stream of images for other tools; each placement comes from (seed, id) and is recorded."""
    tensors, meta = load_artifact(patches_path)
    patches = tensors.get("patches")
    if patches is None:
        raise InvalidInput(f"{patches_path} is not a patch file")
    where = make_placement(degrees, translate, scale, placement, region)
    loader = ImageLoader(patches.shape[1])
    records = list(RecordReader(input_source(source, "image records"), require_image=True))
    images, rows = [], []
    for record in records:
        try:
            image = loader.load(record.data["image"], record.base_dir)
        except InvalidInput as exc:
            raise record.error(exc.message, "image") from None
        if patches.shape[-1] > min(image.shape[-2:]):
            raise record.error(f"the {patches.shape[-1]}-pixel patch is larger than the {image.shape[-2]}×"
                               f"{image.shape[-1]} image", "image")
        if images and image.shape != images[0].shape:
            raise record.error("images differ in size; one output file holds one size (resize upstream)", "image")
        cls = patch_class if patch_class is not None else record.data.get("label")
        if cls is None or not 0 <= cls < len(patches):
            raise record.error(f"no patch for class {cls!r} (the file has {len(patches)}); pass --patch-class", "label")
        spot = where.sample(1, record_generator(common.seed, record.id, "placement"))[0]
        images.append(composite(image[None], patches[cls:cls + 1].float(), spot[None])[0])
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


def main() -> None:
    run_app(app, "unadv-patch")


if __name__ == "__main__":
    main()
