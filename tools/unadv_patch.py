"""`unadv-patch`: patches a fixed model recognises easily (unadversarial examples, thesis ch. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from confidently import __version__
from confidently.cli import Common, common_options, examples, input_source, run_app, tool_app
from confidently.data.corruption_names import IMAGENET_C
from confidently.errors import UsageError
from confidently.io.atomic import guard_output
from confidently.io.records import RecordReader, RecordWriter
from confidently.run.console import console
from confidently.unadversarial.limits import MAX_BACKGROUNDS

# The commands import the library's heavy modules (torch, Mitsuba) themselves, so --help and usage errors start fast.

app = tool_app("unadv-patch", "Unadversarial patches: stickers a fixed model recognises easily.")

PLACEMENT_HELP = "anywhere (±translate, the thesis), center, or region (with --region x0,y0,x1,y1)."


def emit(record: dict[str, Any]) -> None:
    RecordWriter().write({"tool": "unadv-patch", "version": __version__, **record})


PLACEMENT_OPTIONS = {
    "degrees": typer.Option(45.0, "--degrees", help="Rotation range ±degrees."),
    "translate": typer.Option(0.3, "--translate", help="anywhere: centre offset range ± this fraction."),
    "scale": typer.Option("0.9,1.1", "--scale", help="Isotropic scale range LOW,HIGH."),
    "placement": typer.Option("anywhere", "--placement", help=PLACEMENT_HELP),
    "region": typer.Option(None, "--region", help="region: normalised box x0,y0,x1,y1 for the patch centre."),
}


CORRUPTION_HELP = ", ".join(sorted(IMAGENET_C))  # the built-in set, as list_corruptions() names it


def corruption_names(text: str | None, flag: str) -> list[str]:
    """``all``, a comma-separated list of registered corruptions, or nothing."""
    from confidently.data import list_corruptions

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


@app.command(epilog=examples("""
    # the fixed model to help: a tiny ResNet on the bundled shapes (3 epochs, about 80 % on their test split)
    advtrain train --data demo:shapes --split train --arch tiny_resnet --epochs 3 --lr 0.01 \\
      --out shapes.safetensors > shapes.metrics.jsonl
    # one 8×8 patch per class, 30 steps of 32 images under random placement, rotation and scale
    unadv-patch train --model shapes.safetensors --data demo:shapes --split train --patch-size 8 --steps 30 \\
      --batch-size 32 --out patches.safetensors > patches.jsonl
    # patches kept to the right half of the image, hardened against noise and JPEG in the loop
    unadv-patch train --model shapes.safetensors --data demo:shapes --split train --patch-size 8 --steps 10 \\
      --placement region --region 0.5,0,1,1 --train-corruptions gaussian_noise,jpeg_compression \\
      --out patches-right.safetensors > patches-right.jsonl
"""))
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
                                                f"{CORRUPTION_HELP} (default none, as the thesis)."),
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
    from confidently.unadversarial.patches import make_placement
    from confidently.unadversarial.train import PatchConfig
    from confidently.unadversarial.workflows import model_and_data, train_patch_file

    guard_output(out, "unadv-patch", force=force)
    in_loop = corruption_names(train_corruptions, "--train-corruptions")
    in_loop_levels = severity_levels(train_severities, "--train-severities")
    where = make_placement(degrees, translate, scale, placement, region)
    config = PatchConfig(steps, common.batch_size, lr, optimizer, tuple(in_loop), tuple(in_loop_levels),
                         train_corruption_prob)
    model, dataset = model_and_data(model_path, data, split, common.device)
    summary = train_patch_file(model, dataset, out, where, config, patch_size=patch_size, patch_frac=patch_frac,
                               init=init, seed=common.seed, workers=common.workers, model_file=str(model_path),
                               data=data, on_step=lambda m: console.log(f"step {m['step']}: loss {m['loss']:.4f}"))
    emit({"cmd": "train", "artifact": str(out), **summary, "seed": common.seed})


@app.command("eval", epilog=examples("""
    # 64 test images as PNGs in shapes/ and a manifest
    dataset export demo:shapes --split test --limit 64 --out shapes > shapes.jsonl
    # accuracy with no / a random / the unadversarial patch (and another class's: --conflict), clean and corrupted
    unadv-patch eval --model shapes.safetensors --data shapes.jsonl --patches patches.safetensors \\
      --corruptions gaussian_noise,contrast --severities 1,3 --conflict > patch-eval.jsonl
    # the right-half patches land where they were trained (the placement stored in the file), clean only
    unadv-patch eval --model shapes.safetensors --data shapes.jsonl --patches patches-right.safetensors \\
      --corruptions none > patch-right-eval.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "deterministic", "workers"})
def evaluate(model_path: Path = typer.Option(..., "--model"),
             data: str = typer.Option(..., "--data"),
             split: str = typer.Option(None, "--split"),
             patches_path: Path = typer.Option(..., "--patches"),
             baselines: list[Path] = typer.Option(None, "--baseline", help="Other patch files (e.g. best-image)."),
             corruptions: str = typer.Option("all", "--corruptions", help=f"all or a list of: "
                                             f"{CORRUPTION_HELP}."),
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
    from confidently.unadversarial.patches import make_placement
    from confidently.unadversarial.workflows import evaluate_patch_file, model_and_data

    names = corruption_names(corruptions, "--corruptions")
    levels = severity_levels(severities, "--severities")
    given = make_placement(degrees, translate, scale, placement, region)
    model, dataset = model_and_data(model_path, data, split, common.device)
    result = evaluate_patch_file(model, dataset, patches_path, baselines=baselines or [], corruptions=names,
                                 severities=levels, placement=given, overrides=common.explicit, conflict=conflict,
                                 seed=common.seed, batch_size=common.batch_size, workers=common.workers)
    for row in result.rows:
        emit({"cmd": "eval", **row, "patch_size": result.patch_size, "patches": str(patches_path),
              "model": str(model_path), "eval_seed": common.seed, "placement": result.placement.as_dict(),
              "placement_source": result.placement_source})


@app.command(epilog=examples("""
    # each class's easiest training image as its patch; the QR code of the class index (confidently[qr])
    unadv-patch baseline best-image --model shapes.safetensors --data demo:shapes --split train --patch-size 8 \\
      --out best.safetensors > best.jsonl
    unadv-patch baseline qr --model shapes.safetensors --patch-size 8 --out qr.safetensors > qr.jsonl
    # both as extra arms of eval, beside no / random / unadversarial patches
    unadv-patch eval --model shapes.safetensors --data shapes.jsonl --patches patches.safetensors \\
      --baseline best.safetensors --baseline qr.safetensors --corruptions fog --severities 1 > baseline-eval.jsonl
"""))
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
    from confidently.unadversarial.workflows import baseline_patch_file, model_and_data

    guard_output(out, "unadv-patch", force=force)
    model, dataset = model_and_data(model_path, data, split, common.device)
    side = baseline_patch_file(kind, model, dataset, out, patch_size=patch_size, patch_frac=patch_frac,
                               seed=common.seed, batch_size=common.batch_size, workers=common.workers)
    emit({"cmd": "baseline", "kind": kind, "artifact": str(out), "patch_size": side})


@app.command(epilog=examples("""
    # each image wears its own class's patch: pixels in stamped.safetensors, a record per image with its placement
    unadv-patch apply shapes.jsonl --patches patches.safetensors --out stamped.safetensors > stamped.jsonl
    # every image wears class 0's patch, upright in the centre
    unadv-patch apply shapes.jsonl --patches patches.safetensors --patch-class 0 --placement center --degrees 0 \\
      --out class0.safetensors > class0.jsonl
    # the stamped images are data for the other tools
    advtrain eval --model shapes.safetensors --data class0.jsonl --eps 0 > class0-acc.jsonl
"""))
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
    from confidently.unadversarial.patches import make_placement
    from confidently.unadversarial.workflows import stamp_records

    guard_output(out, "unadv-patch", force=force)
    where = make_placement(degrees, translate, scale, placement, region)
    records = list(RecordReader(input_source(source, "image records"), require_image=True))
    writer = RecordWriter()
    for record in stamp_records(records, patches_path, out, where, patch_class=patch_class, seed=common.seed):
        writer.write(record)


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


@app.command(epilog=examples("""
    # a cube texture (Mitsuba 3 renders) the model sees as class 3, the yellow cross: 8 steps of 4 views
    unadv-patch texture --model shapes.safetensors --mesh builtin:cube --class-id 3 --tex-size 16 \\
      --steps 8 --batch-size 4 --lr 0.05 --light-min 1 --light-max 1 --out texture.safetensors > texture.jsonl
    # a mug seen from above, in front of the bundled photos, with the thesis's UV-map gradient
    unadv-patch texture --model shapes.safetensors --mesh builtin:mug --class-id 3 --grad uv --hemisphere \\
      --tex-size 16 --steps 4 --batch-size 4 --backgrounds demo:photos --out mug.safetensors > mug.jsonl
"""))
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
    from confidently.unadversarial.texture import TextureConfig
    from confidently.unadversarial.workflows import TextureScene, model_for_class, train_texture_file

    guard_output(out, "unadv-patch", force=force)
    scene = TextureScene(mesh, spp, (zoom_min, zoom_max), (light_min, light_max), translate, hemisphere, backgrounds)
    config = TextureConfig(steps, common.batch_size if "batch_size" in common.explicit else 8, lr, grad)
    model = model_for_class(model_path, class_id, common.device)
    losses = train_texture_file(model, class_id, scene, out, config, tex_size=tex_size, init=init, seed=common.seed,
                                device=common.device, workers=common.workers, model_file=str(model_path),
                                on_step=lambda m: console.log(f"step {m['step']}: loss {m['loss']:.4f} "
                                                              f"({m['seconds']:.0f} s)"))
    emit({"cmd": "texture", "artifact": str(out), "class_id": class_id, "mesh": mesh, "grad": grad,
          "tex_size": tex_size, "steps": steps, **losses, "seed": common.seed})


@app.command("eval-texture", epilog=examples("""
    # grey / random / unadversarial cube from 8 held-out views (another --seed), clean and under noise
    unadv-patch eval-texture --model shapes.safetensors --mesh builtin:cube --texture texture.safetensors \\
      --light-min 1 --light-max 1 --views 8 --seed 1 --corruptions gaussian_noise --severities 1,3 \\
      > texture-eval.jsonl
    # the mug from above, in front of the bundled photos, clean only
    unadv-patch eval-texture --model shapes.safetensors --mesh builtin:mug --texture mug.safetensors \\
      --hemisphere --backgrounds demo:photos --views 4 --seed 1 > mug-eval.jsonl
"""))
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
    from confidently.models import load_model
    from confidently.run.device import resolve_device
    from confidently.unadversarial.workflows import TextureScene, evaluate_texture_file

    names = corruption_names(corruptions, "--corruptions")
    levels = severity_levels(severities, "--severities") if names else []
    scene = TextureScene(mesh, spp, (zoom_min, zoom_max), (light_min, light_max), translate, hemisphere, backgrounds)
    model = load_model(model_path, resolve_device(common.device))
    for row in evaluate_texture_file(model, texture_path, scene, views_count=views_count, corruptions=names,
                                     severities=levels, seed=common.seed, batch_size=common.batch_size,
                                     device=common.device, workers=common.workers):
        emit({"cmd": "eval-texture", **row, "mesh": mesh, "texture": str(texture_path), "model": str(model_path),
              "eval_seed": common.seed})


@app.command(epilog=examples("""
    # the cube's texture as a lossless PNG, for Blender, Unreal or AirSim
    unadv-patch export --texture texture.safetensors --out texture.png > texture-png.jsonl
    # the patches as stickers to print: sticker-0.png ... sticker-9.png
    unadv-patch export --patches patches.safetensors --out sticker.png > stickers.jsonl
"""))
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
    from confidently.unadversarial.workflows import export_pngs

    for row in export_pngs(out, texture_path=texture_path, patches_path=patches_path, flip_v=flip_v, force=force):
        emit({"cmd": "export", **row})


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


@airsim_app.command("eval", epilog=examples("""
    # no AirSim here, so the loopback test double (NOT AirSim) stands in, on a free port, until the shell exits;
    # with AirSim running, only the last command is needed, without --port (AirSim listens on 41451)
    rm -f fake.jsonl; unadv-patch airsim serve-fake --port 0 > fake.jsonl & trap 'kill $!' EXIT
    # wait for its one record, which names the port it listens on
    while kill -0 $! && [ ! -s fake.jsonl ]; do sleep 0.2; done
    port=$(grep -o '"port":[0-9]*' fake.jsonl | cut -d: -f2)
    # the Target at 1 place, a 2×2×2 camera grid, clear and foggy: its own material, then the exported texture
    unadv-patch airsim eval --port "$port" --object Target --model shapes.safetensors --class-id 3 \\
      --texture-png texture.png --locations 1 --grid 2 --weather fog:0,0.5 > airsim-eval.jsonl
"""))
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
    from confidently.unadversarial.airsim import GridSpec, grid_eval_with_summaries, parse_weather, texture_arms
    from confidently.unadversarial.workflows import model_for_class

    try:
        low, high = (float(v) for v in heights.split(","))
    except ValueError:
        raise UsageError(f"--heights {heights!r}: expected LOW,HIGH metres, e.g. 2,6") from None
    spec = GridSpec(locations, grid, spread, radius, (low, high))
    settings = parse_weather(weather)
    model = model_for_class(model_path, class_id, common.device)
    with airsim_connect(host, port, connect_timeout, timeout) as sim:
        for record in grid_eval_with_summaries(sim, model, object_name, class_id, topk=topk,
                                               arms=texture_arms(texture_png, original_png), weather=settings,
                                               spec=spec, seed=common.seed, batch_size=common.batch_size,
                                               camera=camera):
            summary = record["cmd"] == "airsim-eval-summary"
            emit({**record, "model": str(model_path), **({"seed": common.seed} if summary else {})})


@airsim_app.command("land", epilog=examples("""
    # no AirSim here, so the loopback test double (NOT AirSim) stands in, on a free port, until the shell exits;
    # with AirSim running, only the last command is needed, without --port (AirSim listens on 41451)
    rm -f fake.jsonl; unadv-patch airsim serve-fake --port 0 > fake.jsonl & trap 'kill $!' EXIT
    # wait for its one record, which names the port it listens on
    while kill -0 $! && [ ! -s fake.jsonl ]; do sleep 0.2; done
    port=$(grep -o '"port":[0-9]*' fake.jsonl | cut -d: -f2)
    # PID landing on its LandingPad from the simulator's ground truth (the controller's upper bound), clear and dusty
    unadv-patch airsim land --port "$port" --regressor oracle --episodes 1 --weather dust:0,0.3 > landings.jsonl
"""))
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
    from confidently.run.device import resolve_device
    from confidently.unadversarial.airsim import (
        LandingConfig,
        land_episodes,
        load_regressor,
        parse_weather,
        texture_arms,
    )

    config = LandingConfig(kp, kd, ki, dt, start_alt, start_radius, descent, land_alt, max_time, max_speed,
                           success_radius, camera)
    settings = parse_weather(weather)
    learned = None if regressor == "oracle" else load_regressor(regressor, resolve_device(common.device))
    with airsim_connect(host, port, connect_timeout, timeout) as sim:
        for row in land_episodes(sim, learned, pad, config, arms=texture_arms(texture_png, original_png),
                                 episodes=episodes, weather=settings, seed=common.seed):
            controller = {"kp": kp, "kd": kd, "ki": ki, "dt": dt} if row["cmd"] == "airsim-land" else {}
            emit({**row, "regressor": regressor, **controller, "seed": common.seed})


@airsim_app.command("serve-fake", epilog=examples("""
    # a 32×32 AirSim stand-in on a free port (AirSim's own: 41451), in the background; Ctrl-C or kill stops it
    unadv-patch airsim serve-fake --port 0 --width 32 --height 32 > sim.jsonl & trap 'kill $!' EXIT
    # its one record names the port; any AirSim client can connect there
    while kill -0 $! && [ ! -s sim.jsonl ]; do sleep 0.2; done
    port=$(grep -o '"port":[0-9]*' sim.jsonl | cut -d: -f2)
    unadv-patch airsim land --port "$port" --regressor oracle --start-alt 3 > fake-landing.jsonl
"""))
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
