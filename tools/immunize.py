"""`immunize`: perturb photos so latent-diffusion editing fails (PhotoGuard, thesis ch. 4); edit and score."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from confidently import __version__
from confidently.cli import (
    Common,
    common_options,
    examples,
    input_source,
    run_app,
    stream_batches,
    stream_records,
    tool_app,
)
from confidently.errors import UsageError
from confidently.immunize.presets import PRESETS, parse_fraction
from confidently.io.atomic import claim_folder, guard_output, write_json_atomic
from confidently.io.records import RecordReader, RecordWriter
from confidently.run.console import console

if TYPE_CHECKING:
    from confidently.immunize import PGDConfig

# torch, diffusers and the rest of confidently.immunize load inside the commands, so --help starts in a blink

NOT_A_GUARANTEE = ("Immunization raises the cost of editing with the model it was computed against; it is not a "
                   "guarantee: cropping, resizing, filters, JPEG, diffusion purification or another model can "
                   "remove it.")
app = tool_app("immunize", "Immunize photos against diffusion-model editing (PhotoGuard), edit them, score the "
                           f"edits. {NOT_A_GUARANTEE}")

MODEL_DIR = typer.Option(..., "--model-dir", help="Local diffusers LDM directory (SD v1.5 layout: vae/, unet/, "
                                                  "scheduler/, text_encoder/+tokenizer/ or toy_text/), or a "
                                                  "single-file checkpoint (.safetensors in the original LDM key "
                                                  "layout; .ckpt only with --trust-pickle) with --config-dir.")
OPTIONS: dict[str, Any] = {
    "input": typer.Argument(None, help="JSONL records (id, image, optional mask, prompt, seed, prompt_embeds); "
                                       "- or nothing for stdin."),
    "out_dir": typer.Option(..., "--out-dir", help="Folder for the per-image PNG and safetensors files."),
    "force": typer.Option(False, "--force", help="Write into a non-empty --out-dir immunize did not make."),
    "dtype": typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16 on CUDA: the VAE, UNet and text encoder "
                                                  "weights held in it (fp16: half the memory) and autocast; "
                                                  "pixels and losses stay fp32 (CPU is always fp32)."),
    "size": typer.Option("auto", "--size", help="Centre-crop + resize images to N×N (auto: the VAE's sample_size; "
                                                "0 keeps the size, which must be a multiple of the VAE's "
                                                "downsampling factor)."),
    "mask_convention": typer.Option("regenerate", "--mask-convention",
                                    help="What white (1) means in mask files: regenerate (diffusers, default: the "
                                         "editor repaints it, the rest is kept and protected) or keep."),
    "mode": typer.Option("auto", "--mode", help="auto (from the UNet's in_channels: 9 inpaint, 4 img2img), "
                                                "inpaint or img2img."),
    "prompt_embeds": typer.Option(None, "--prompt-embeds",
                                  help="safetensors with prompt_embeds [1,L,D] (+ negative_prompt_embeds): "
                                       "conditioning without a text encoder; a record's prompt_embeds field wins."),
    "guidance": typer.Option(7.5, "--guidance", help="Classifier-free guidance scale."),
    "eta": typer.Option(1.0, "--eta", min=0.0, help="DDIM eta (1 = fully stochastic)."),
    "strength": typer.Option(None, "--strength", help="Edit strength (default 1.0 inpaint, 0.5 img2img)."),
    "variant": typer.Option(None, "--variant", help="Load the weights-file variant, e.g. fp16 for "
                                                    "diffusion_pytorch_model.fp16.safetensors (held in --dtype: "
                                                    "pass --dtype fp16 on CUDA to keep them fp16)."),
    "config_dir": typer.Option(None, "--config-dir", help="With a single-file --model-dir: a local diffusers-layout "
                                                          "folder holding the model's configs (model_index.json, "
                                                          "vae/ and unet/config.json, scheduler/, tokenizer/ + "
                                                          "text_encoder/config.json or toy_text/); no weights needed, "
                                                          "nothing is downloaded."),
    "trust_pickle": typer.Option(False, "--trust-pickle", help="Also load components whose weights are pickles "
                                                               "(.bin), which can run code: only files you trust."),
}


def attack_options(steps: int) -> dict[str, Any]:
    return {
        "preset": typer.Option("thesis", "--preset", help=f"Defaults for eps/step/steps/random start/schedule: "
                                                          f"{', '.join(PRESETS)} (flags win)."),
        "eps": typer.Option("16/255", "--eps", help="Budget on the [0, 1] pixel scale; fractions parse (16/255)."),
        "step": typer.Option("2/255", "--step", help="PGD step size on the [0, 1] scale."),
        "steps": typer.Option(steps, "--steps", min=0, help="PGD iterations."),
        "norm": typer.Option("linf", "--norm", help="linf (thesis) or l2 (reference super_l2; eps = L2 radius)."),
        "target": typer.Option("gray", "--target", help="gray, black, noise or an image PATH."),
        "random_start": typer.Option(False, "--random-start/--no-random-start", help="Start at x + U[-eps, eps]."),
        "step_schedule": typer.Option("constant", "--step-schedule", help="constant or linear (reference decay)."),
        "image_format": typer.Option("png", "--format", help="png (lossless); jpg/webp only with --allow-lossy."),
        "allow_lossy": typer.Option(False, "--allow-lossy", help="Allow lossy output formats (they erase much "
                                                                 "of the perturbation)."),
        "resume": typer.Option(False, "--resume", help="Reuse the files of records finished before with the same "
                                                       "settings (an interrupted run continues where it stopped)."),
    }


ENCODER_OPTIONS, DIFFUSION_OPTIONS = attack_options(200), attack_options(200)


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the subcommands


def records_of(input_path: str | None, unique_by: tuple[str, ...] = (), duplicate_hint: str = "") -> RecordReader:
    """The input records; ``unique_by`` fields join the id in the key that must not repeat."""
    return RecordReader(input_source(input_path), yield_errors=True, unique_by=unique_by,
                        duplicate_hint=duplicate_hint)


# `edit` names its files by id, so several methods' records of the same photos need one run each
SEPARATE_EDITS = ("edits are files named by id in --out-dir, so edit each method's records in its own run and "
                  "--out-dir, then `cat` the edited records into `immunize score --group-by method`")


def log(common: Common, message: str) -> None:
    if not common.quiet:
        console.log(message)


# ---------------------------------------------------------------------------------------------------------
# immunize tiny-model


@app.command("tiny-model", epilog=examples("""
    # a tiny random img2img LDM for laptops and CI (real work: a local Stable Diffusion v1.5 folder)
    immunize tiny-model --out tiny-ldm --size 32 --unet img2img
    # an inpainting twin (9-channel UNet, for records with a mask: white = regenerate) shaped like Stable
    # Diffusion 2.1: v-prediction, upcast attention, heads listed per block
    immunize tiny-model --out tiny-inpaint --size 32 --unet inpaint --family sd2
    # three bundled photos at 32 px to immunize: photos/*.png, one record each in photos.jsonl
    dataset export demo:photos --size 32 --crop --limit 3 --out photos > photos.jsonl
"""))
@common_options(uses={"seed"})
def tiny_model(out: Path = typer.Option(..., "--out", help="Directory to write (diffusers layout)."),
               size: int = typer.Option(32, "--size", min=8, help="Image side the model is sized for."),
               unet: str = typer.Option("inpaint", "--unet", help="inpaint (9-channel UNet) or img2img (4)."),
               scale: str = typer.Option("tiny", "--scale", help="tiny, or sd15 / sd2: Stable Diffusion 1.5's / "
                                         "2.x's shapes (VAE ×8, 860M / 866M-parameter UNet; ~4 GB on disk) with "
                                         "random weights, to measure an attack's memory and speed on a GPU."),
               family: str = typer.Option(None, "--family", help="sd15 or sd2 (SD 2.1's configs: v-prediction, "
                                          "upcast attention, linear attention projections, heads per block); "
                                          "sdxl (tiny only: SDXL's layout, two CLIP text encoders and "
                                          "tokenizers, a text_time UNet); default: the scale's (sd15 for tiny)."),
               prediction: str = typer.Option(None, "--prediction", help="What the UNet predicts, the scheduler's "
                                              "prediction_type: epsilon or v (default: the family's; epsilon "
                                              "for sd15, v for sd2)."),
               force: bool = typer.Option(False, "--force", help="Write into a non-empty --out immunize did not "
                                          "make."),
               *, common: Common) -> None:
    """Write a small randomly initialised LDM directory (tiny VAE, UNet, DDIM, hash text encoder) for tests."""
    from confidently.immunize import write_tiny_model
    from confidently.immunize.models import random_family
    from confidently.immunize.sdxl import check_tiny_sdxl, write_tiny_sdxl

    if family == "sdxl":  # usage errors before the folder is claimed
        check_tiny_sdxl(size, unet, scale, prediction)
        prediction = "epsilon"
    else:
        family, prediction = random_family(scale, family, prediction)
    claim_folder(out, "immunize", force=force)
    if family == "sdxl":
        model_dir = write_tiny_sdxl(out, size=size, unet=unet, seed=common.seed)
    else:
        model_dir = write_tiny_model(out, size=size, unet=unet, seed=common.seed, scale=scale, family=family,
                                     prediction=prediction)
    vae_config = json.loads((model_dir / "vae" / "config.json").read_text())
    downsampling = 2 ** (len(vae_config["block_out_channels"]) - 1)
    RecordWriter().write({"kind": "immunize.model", "tool_version": __version__, "model_dir": str(out),
                          "size": size, "unet": unet, "scale": scale, "family": family,
                          "prediction": prediction, "seed": common.seed,
                          "downsampling": downsampling,
                          "note": "random weights: for tests and laptops, not a real editor"})
    log(common, f"wrote a {scale} random {unet} model ({family}, {prediction}-prediction) to {out}")


@app.command("tiny-clip", epilog=examples("""
    # a tiny random CLIP (transformers' CLIPModel + CLIPProcessor) for `immunize score --clip` in tests
    immunize tiny-clip --out tiny-clip
    # what it wrote: config.json + model.safetensors (CLIPModel), vocab.json + merges.txt (the tokenizer), ...
    ls tiny-clip
"""))
@common_options(uses={"seed"})
def tiny_clip(out: Path = typer.Option(..., "--out", help="Directory to write (save_pretrained layout)."),
              size: int = typer.Option(32, "--size", min=8, help="Image side of the vision tower."),
              force: bool = typer.Option(False, "--force", help="Write into a non-empty --out immunize did not "
                                         "make."),
              *, common: Common) -> None:
    """Write a small randomly initialised CLIP (and a minimal BPE tokenizer) for `score --clip` in tests.

    Random weights: its similarities are numbers to test the plumbing with, not a judgement of the edits.
    Real work: a downloaded CLIP folder such as openai/clip-vit-large-patch14.
    """
    from confidently.immunize.clip import write_tiny_clip

    claim_folder(out, "immunize", force=force)
    write_tiny_clip(out, size=size, seed=common.seed)
    RecordWriter().write({"kind": "immunize.clip", "tool_version": __version__, "clip_dir": str(out),
                          "size": size, "seed": common.seed, "note": "random weights: for tests, not a real CLIP"})
    log(common, f"wrote a tiny CLIP to {out}")


# ---------------------------------------------------------------------------------------------------------
# immunize encoder | diffusion | random


def pgd_config(preset: str, eps: str, step: str, steps: int, norm: str, random_start: bool, step_schedule: str,
               grad_reps: int, common: Common) -> PGDConfig:
    """The preset's values, overridden by every flag the user set explicitly."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r}: choose {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    flags = {"eps": parse_fraction(eps, "--eps"), "step": parse_fraction(step, "--step"), "steps": steps,
             "random_start": random_start, "step_schedule": step_schedule}
    for name, value in flags.items():
        if name in common.explicit:
            values[name] = value
    limit_ok = 0 < values["eps"] <= 1 if norm == "linf" else values["eps"] > 0
    if not limit_ok:
        raise UsageError(f"--eps {eps}: must lie in (0, 1] on the [0, 1] pixel scale (e.g. 16/255)"
                         if norm == "linf" else f"--eps {eps}: the L2 radius must be > 0")
    from confidently.immunize import PGDConfig

    return PGDConfig(norm=norm, grad_reps=grad_reps, **values)


def run_attack(method: str, input_path: str | None, model_dir: Path, out_dir: Path, dtype: str, size: str,
               mask_convention: str, mode: str, config: PGDConfig, preset: str, target: str, image_format: str,
               allow_lossy: bool, common: Common, trust_pickle: bool = False, variant: str | None = None,
               config_dir: Path | None = None, **extra: Any) -> None:
    from confidently.immunize import check_output_format, configured_mode, load_ldm
    from confidently.immunize.inputs import Pictures, Prompts
    from confidently.immunize.workers import Immunizer
    from confidently.run.device import resolve_device

    if mode not in ("auto", "inpaint", "img2img"):
        raise UsageError(f"--mode {mode!r}: choose auto, inpaint or img2img")
    if target not in ("gray", "black", "noise") and not Path(target).is_file():
        raise UsageError(f"--target {target!r}: choose gray, black, noise or an existing image file")
    check_output_format(out_dir / f"x.{image_format}", allow_lossy)
    claim_folder(out_dir, "immunize", force=extra.get("force", False))
    if image_format != "png":
        console.log(f"[yellow]warning: {image_format} output is lossy; the saved files will not keep the full "
                    "perturbation[/]")
    device = resolve_device(common.device)
    parts = ("vae", "unet", "scheduler", "text") if method == "diffusion" else ("vae",)
    ldm = load_ldm(model_dir, device, dtype, parts=parts, trust_pickle=trust_pickle, variant=variant,
                   config_dir=config_dir)
    if method == "diffusion" and device.type == "cpu" and not extra.pop("force", False):
        params = sum(p.numel() for p in ldm.unet.parameters())
        if params > 100_000_000:
            raise UsageError(f"the diffusion attack on a {params / 1e6:.0f}M-parameter UNet on CPU would take days; "
                             "use a GPU, the encoder attack, or --force")
    extra.pop("force", None)
    if method == "diffusion":
        mode_now = configured_mode(ldm.model_dir)
        if mode not in ("auto", mode_now):
            raise UsageError(f"--mode {mode}: {ldm.model_dir}/unet is an {mode_now} model")
    pictures = Pictures(ldm, size, mask_convention)
    prompts = Prompts(ldm, extra.pop("prompt_embeds", None)) if method == "diffusion" else None
    out_dir.mkdir(parents=True, exist_ok=True)
    worker = Immunizer(method, ldm, pictures, prompts, config, out_dir, image_format, seed=common.seed,
                       run_config=common.config, log=lambda message: log(common, message), verbose=common.verbose,
                       mode=mode,
                       target=target, preset=preset, **extra)
    budget = f"eps {config.eps * 255:.3g}/255" if config.norm == "linf" else f"L2 radius {config.eps:g}"
    steps = "" if method == "random" else f", step {config.step * 255:.3g}/255, {config.steps} steps"
    log(common, f"{method}: {config.norm} {budget}{steps}, on {device}. {NOT_A_GUARANTEE}")
    stream_batches(records_of(input_path), worker.process_batch, common, batch_size=common.batch_size,
                   description=method)


@app.command(epilog=examples("""
    # PGD on the VAE latent, eps 16/255, 20 steps of 2/255 (200 by default): one PNG + safetensors per photo,
    # 3 photos of one size per step on the device (each photo's result is the one it gets alone)
    immunize encoder photos.jsonl --model-dir tiny-ldm --eps 16/255 --step 2/255 --steps 20 --batch-size 3 \\
      --out-dir immunized > immunized.jsonl
    # the first photo only, from stdin: PhotoGuard's demo preset (random start, decaying step), toward black
    head -1 photos.jsonl | immunize encoder - --model-dir tiny-ldm --preset photoguard-demo --steps 10 \\
      --target black --out-dir immunized-black > immunized-black.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                       "deterministic"},
                batch_size=4)
def encoder(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
            preset: str = ENCODER_OPTIONS["preset"], eps: str = ENCODER_OPTIONS["eps"],
            step: str = ENCODER_OPTIONS["step"], steps: int = ENCODER_OPTIONS["steps"],
            norm: str = ENCODER_OPTIONS["norm"], target: str = ENCODER_OPTIONS["target"],
            random_start: bool = ENCODER_OPTIONS["random_start"],
            step_schedule: str = ENCODER_OPTIONS["step_schedule"], mode: str = OPTIONS["mode"],
            size: str = OPTIONS["size"], mask_convention: str = OPTIONS["mask_convention"],
            dtype: str = OPTIONS["dtype"], image_format: str = ENCODER_OPTIONS["image_format"],
            allow_lossy: bool = ENCODER_OPTIONS["allow_lossy"], resume: bool = ENCODER_OPTIONS["resume"],
            trust_pickle: bool = OPTIONS["trust_pickle"], variant: str = OPTIONS["variant"],
            config_dir: Path = OPTIONS["config_dir"], force: bool = OPTIONS["force"], *, common: Common) -> None:
    """Encoder attack: PGD pushing the VAE latent toward the target's (cheap; needs only vae/).

    With a mask, only the kept region (mask 0) is perturbed and, for inpainting models, the loss is taken
    on the masked image the editor encodes. Not a guarantee: see `immunize --help`.
    """
    config = pgd_config(preset, eps, step, steps, norm, random_start, step_schedule, 1, common)
    run_attack("encoder", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               target, image_format, allow_lossy, common, trust_pickle, variant, config_dir, resume=resume,
               force=force)


@app.command(epilog=examples("""
    # PGD through 4 checkpointed denoising steps of the edit (img2img unrolls 2), 2 noise draws per step
    immunize diffusion photos.jsonl --model-dir tiny-ldm --steps 4 --attack-denoise-steps 4 --grad-reps 2 \\
      --out-dir diffused > diffused.jsonl
    # the first photo, a deterministic objective (fixed noise per draw) and a prompt inside the attack
    head -1 photos.jsonl | immunize diffusion - --model-dir tiny-ldm --steps 4 --grad-reps 2 --eot-noise fixed \\
      --attack-prompt "a photo on the beach" --out-dir diffused-fixed > diffused-fixed.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                       "deterministic"},
                batch_size=1)
def diffusion(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
              preset: str = DIFFUSION_OPTIONS["preset"], eps: str = DIFFUSION_OPTIONS["eps"],
              step: str = DIFFUSION_OPTIONS["step"], steps: int = DIFFUSION_OPTIONS["steps"],
              norm: str = DIFFUSION_OPTIONS["norm"], target: str = DIFFUSION_OPTIONS["target"],
              random_start: bool = DIFFUSION_OPTIONS["random_start"],
              step_schedule: str = DIFFUSION_OPTIONS["step_schedule"],
              attack_denoise_steps: int = typer.Option(4, "--attack-denoise-steps", min=1,
                                                       help="Denoising steps K of the attack's edit; "
                                                            "img2img unrolls floor(K * strength) of them."),
              grad_reps: int = typer.Option(10, "--grad-reps", min=1, help="EOT: gradients averaged per iteration "
                                                                          "over fresh sampling noise."),
              eot_noise: str = typer.Option("fresh", "--eot-noise", help="fresh noise per iteration (reference) or "
                                                                         "fixed per rep (deterministic objective)."),
              guidance: float = OPTIONS["guidance"], eta: float = OPTIONS["eta"],
              strength: float = OPTIONS["strength"],
              attack_prompt: str = typer.Option("", "--attack-prompt", help="Prompt inside the attack (default \"\")."),
              attack_prompt_from_record: bool = typer.Option(False, "--attack-prompt-from-record",
                                                             help="Use each record's edit prompt instead."),
              checkpointing: bool = typer.Option(True, "--checkpointing/--no-checkpointing",
                                                 help="Checkpoint every denoising step and every VAE/UNet "
                                                      "block (peak memory independent of K; ~1.5× time)."),
              force: bool = typer.Option(False, "--force", help="Run an SD-size diffusion attack on CPU anyway; "
                                         "write into a non-empty --out-dir immunize did not make."),
              prompt_embeds: Path = OPTIONS["prompt_embeds"], mode: str = OPTIONS["mode"],
              size: str = OPTIONS["size"], mask_convention: str = OPTIONS["mask_convention"],
              dtype: str = OPTIONS["dtype"], image_format: str = DIFFUSION_OPTIONS["image_format"],
              allow_lossy: bool = DIFFUSION_OPTIONS["allow_lossy"], resume: bool = DIFFUSION_OPTIONS["resume"],
              trust_pickle: bool = OPTIONS["trust_pickle"], variant: str = OPTIONS["variant"],
              config_dir: Path = OPTIONS["config_dir"], *, common: Common) -> None:
    """Diffusion attack: PGD through K checkpointed denoising steps of the edit, pushing its output toward
    the target (expensive; needs vae/, unet/, scheduler/ and a text encoder or prompt embeddings)."""
    from confidently.immunize import EditConfig

    config = pgd_config(preset, eps, step, steps, norm, random_start, step_schedule, grad_reps, common)
    edit = EditConfig("inpaint", attack_denoise_steps, guidance, eta, strength, checkpointing)
    run_attack("diffusion", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               target, image_format, allow_lossy, common, trust_pickle, variant, config_dir, edit=edit,
               attack_prompt=attack_prompt,
               attack_prompt_from_record=attack_prompt_from_record, eot_noise=eot_noise, force=force,
               prompt_embeds=prompt_embeds, resume=resume)


@app.command("random", epilog=examples("""
    # the baseline: uniform noise within the same budget, eps 16/255
    immunize random photos.jsonl --model-dir tiny-ldm --eps 16/255 --out-dir random > random.jsonl
    # run again after an interruption: the finished photos' files are reused
    immunize random photos.jsonl --model-dir tiny-ldm --eps 16/255 --out-dir random --resume > random.jsonl
"""))
@common_options(uses={"seed", "device", "batch_size", "shard", "engine", "address", "skip_invalid",
                       "deterministic"})
def random_noise(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
                 preset: str = ENCODER_OPTIONS["preset"], eps: str = ENCODER_OPTIONS["eps"],
                 norm: str = ENCODER_OPTIONS["norm"], mode: str = OPTIONS["mode"], size: str = OPTIONS["size"],
                 mask_convention: str = OPTIONS["mask_convention"], dtype: str = OPTIONS["dtype"],
                 image_format: str = ENCODER_OPTIONS["image_format"],
                 allow_lossy: bool = ENCODER_OPTIONS["allow_lossy"], resume: bool = ENCODER_OPTIONS["resume"],
                 trust_pickle: bool = OPTIONS["trust_pickle"], variant: str = OPTIONS["variant"],
                 config_dir: Path = OPTIONS["config_dir"], force: bool = OPTIONS["force"], *,
                 common: Common) -> None:
    """Baseline: x + U[-eps, eps] per pixel (same budget, same mask), clipped to [0, 1]."""
    config = replace(pgd_config(preset, eps, "1/255", 0, norm, False, "constant", 1, common), steps=0,
                     random_start=False)
    run_attack("random", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               "gray", image_format, allow_lossy, common, trust_pickle, variant, config_dir, resume=resume,
               force=force)


# ---------------------------------------------------------------------------------------------------------
# immunize edit

@app.command(epilog=examples("""
    # edit each clean photo and its immunized copy with the same seed: edit_clean, edit_immunized
    immunize edit immunized.jsonl --model-dir tiny-ldm --steps 10 --out-dir edits > edited.jsonl
    # also edit JPEG-compressed copies of the noised photos and of the clean ones, the control (does it survive?)
    immunize edit random.jsonl --model-dir tiny-ldm --steps 10 --transform jpeg:75 \\
      --out-dir edits-random > edited-random.jsonl
    # attack and edit in one pipe
    head -1 photos.jsonl | immunize encoder - --model-dir tiny-ldm --steps 5 --out-dir piped -q \\
      | immunize edit --model-dir tiny-ldm --steps 10 --out-dir piped-edits > piped-edits.jsonl
    # the toolbox's own denoising loop instead of diffusers' pipeline (the same edit for the same seed)
    immunize edit immunized.jsonl --model-dir tiny-ldm --steps 10 --backend own --out-dir edits-own \\
      > edited-own.jsonl
"""))
@common_options(uses={"seed", "device", "shard", "engine", "address", "skip_invalid", "deterministic"})
def edit(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
         mode: str = OPTIONS["mode"],
         steps: int = typer.Option(100, "--steps", min=1, help="Denoising steps (thesis Table D.1: 100)."),
         guidance: float = OPTIONS["guidance"], eta: float = OPTIONS["eta"], strength: float = OPTIONS["strength"],
         negative_prompt: str = typer.Option("", "--negative-prompt"),
         fields: str = typer.Option("image,immunized", "--fields",
                                    help="Record fields to edit: image → edit_clean, immunized → edit_immunized, "
                                         "X → edit_X."),
         paste_back: bool = typer.Option(True, "--paste-back/--no-paste-back",
                                         help="Inpainting: put the original photo's pixels back in the "
                                              "kept region."),
         transform: list[str] = typer.Option(None, "--transform",
                                             help="Also edit every field's image after jpeg:Q, resize:S, blur:S, "
                                                  "crop:F or rotate:D (fields edit_immunized_<transform> and its "
                                                  "control edit_clean_<transform>, the clean photo after the same "
                                                  "transform); repeatable or comma list."),
         prompt_embeds: Path = OPTIONS["prompt_embeds"], size: str = OPTIONS["size"],
         mask_convention: str = OPTIONS["mask_convention"], dtype: str = OPTIONS["dtype"],
         backend: str = typer.Option("pipeline", "--backend", help="pipeline: diffusers' StableDiffusionInpaint/"
                                     "Img2ImgPipeline, what an editor runs (needs diffusers + transformers); own: "
                                     "the toolbox's differentiable loop the diffusion attack unrolls (same edit "
                                     "for the same seed)."),
         trust_pickle: bool = OPTIONS["trust_pickle"], variant: str = OPTIONS["variant"],
         config_dir: Path = OPTIONS["config_dir"], force: bool = OPTIONS["force"], *, common: Common) -> None:
    """Edit clean and immunized images with the same prompt, mask and seed (DDIM from the checkpoint's config),
    through diffusers' pipeline (default) or the toolbox's own loop."""
    from confidently.immunize import EditConfig, load_ldm, resolve_mode
    from confidently.immunize.edit_backends import EDIT_BACKENDS
    from confidently.immunize.inputs import Pictures, Prompts
    from confidently.immunize.transforms import parse_transforms
    from confidently.immunize.workers import Editor
    from confidently.run.device import resolve_device

    names = [f.strip() for f in fields.split(",") if f.strip()]
    if not names:
        raise UsageError("--fields: name at least one record field holding an image")
    transforms = parse_transforms(transform or [])
    if backend not in EDIT_BACKENDS:  # before the model loads
        raise UsageError(f"--backend {backend!r}: choose {' or '.join(EDIT_BACKENDS.names())}")
    claim_folder(out_dir, "immunize", force=force)
    ldm = load_ldm(model_dir, resolve_device(common.device), dtype, trust_pickle=trust_pickle, variant=variant,
                   config_dir=config_dir)
    config = EditConfig(resolve_mode(ldm, mode), steps, guidance, eta, strength)
    if backend == "pipeline":
        from confidently.immunize.pipelines import build_pipeline

        build_pipeline(ldm, config.mode)  # a missing diffusers/transformers stops here, before any record
    pictures, prompts = Pictures(ldm, size, mask_convention), Prompts(ldm, prompt_embeds)
    out_dir.mkdir(parents=True, exist_ok=True)
    editor = Editor(ldm, pictures, prompts, config, names, negative_prompt, paste_back, transforms, out_dir,
                    seed=common.seed, run_config=common.config, log=lambda message: log(common, message),
                    backend=backend)
    log(common, f"edit: {config.mode} via {backend}, {steps} DDIM steps, guidance {guidance}, eta {eta}, "
                f"strength {config.effective_strength}, {ldm.dtype} on {ldm.device}")
    stream_records(records_of(input_path, duplicate_hint=SEPARATE_EDITS), editor, common, description="edit")


# ---------------------------------------------------------------------------------------------------------
# immunize score (metrics between edits: lib/confidently/immunize/metrics.py)

SCORE_FEATURES = ("inception", "vae")
NO_INCEPTION = ("no Inception weights: pass --fid-weights FILE (the pytorch-fid pt_inception-2015-12-05 state "
                "dict; never downloaded) or --features vae --model-dir DIR (a non-comparable proxy)")


def _score_features(names: list[str], features: str, fid_weights: Path | None, model_dir: Path | None,
                    device, trust_pickle: bool = False,
                    config_dir: Path | None = None) -> tuple[object | None, str | None, str | None]:
    """(feature function, its name, why there is none) for FID/PR."""
    from confidently.immunize.metrics import inception_features, latent_features

    if features not in SCORE_FEATURES:
        raise UsageError(f"--features {features!r}: choose {' or '.join(SCORE_FEATURES)}")
    if features == "vae" and fid_weights is not None:
        raise UsageError("--fid-weights is the Inception of --features inception; drop it for --features vae")
    if not names:
        return None, None, None
    if features == "vae" and model_dir is None:
        raise UsageError("--features vae needs --model-dir DIR (the LDM whose VAE encodes the edits)")
    if features == "inception":
        if fid_weights is None:
            return None, None, NO_INCEPTION
        return inception_features(fid_weights, device), "inception", None
    from confidently.immunize.models import load_ldm

    ldm = load_ldm(model_dir, device, parts=("vae",), trust_pickle=trust_pickle, config_dir=config_dir)
    return latent_features(lambda images: ldm.encode_mean(images * 2 - 1)), "vae", None


def _show_scores(summaries: list[dict], groups: list[str], pair_names: list[str], set_names: list[str]) -> None:
    """The summary as a table on stderr: one row per metric, one column per group and transform."""
    from confidently.immunize.metrics import SET_METRICS
    from rich.table import Table

    if not summaries:
        return
    heads = [" ".join([*(str(s.get(g)) for g in groups), *([s["transform"]] if s["transform"] else [])]) or "all"
             for s in summaries]
    table = Table("metric", *heads, title="immunize score: edit(immunized) vs edit(clean), mean ± std")
    table.add_row("n", *(str(s["n"]) for s in summaries))
    for name in pair_names:
        table.add_row(name, *(f"{s[name]['mean']:.3g}±{s[name]['std']:.2g}" if s.get(name) else "–"
                              for s in summaries))
    for key in (f for name in set_names for f in SET_METRICS.get(name).fields):
        table.add_row(key, *(f"{s[key]:.3f}" if s.get(key) is not None else "–" for s in summaries))
    for key, label in (("clip_ref", "clip (ref edit)"), ("clip_test", "clip (test edit)")):
        if any(key in s for s in summaries):
            table.add_row(label, *(f"{s[key]['mean']:.3g}±{s[key]['std']:.2g}" if s.get(key) else "–"
                                   for s in summaries))
    console.print(table)
    reasons: dict[str, list[str]] = {}
    for s in summaries:
        for name, reason in s["skipped"].items():
            if name not in reasons.setdefault(reason, []):
                reasons[reason].append(name)
    for reason, names in reasons.items():
        console.print(f"{', '.join(names)} skipped: {reason}", markup=False)


@app.command(epilog=examples("""
    # SSIM, PSNR, VIFp, ... between the two edits of each photo, then a summary (table on stderr)
    immunize score edited.jsonl > scores.jsonl
    # how much protection survives JPEG (against the clean photo's JPEG edit); FID from the LDM's VAE (a proxy)
    immunize score edited-random.jsonl --transforms jpeg:75 --metrics ssim,psnr,fid \\
      --features vae --model-dir tiny-ldm --summary random-summary.json > scores-random.jsonl
    # the random, encoder and diffusion outputs of the same photos in one table (records keyed by method, id)
    cat edited-random.jsonl edited.jsonl | immunize score --group-by method --metrics ssim,psnr \\
      > scores-methods.jsonl
    # edit a photo with a prompt, then the prompt–image CLIP similarity of both edits (thesis Fig. 4.6), from a
    # local CLIP folder (here tiny-clip's random one)
    head -1 immunized.jsonl | sed 's/}$/,"prompt":"a cat on the beach"}/' \\
      | immunize edit - --model-dir tiny-ldm --steps 4 --out-dir edits-prompt -q \\
      | immunize score --metrics ssim --clip tiny-clip > scores-clip.jsonl
"""))
@common_options(uses={"device", "batch_size", "shard", "engine", "address", "skip_invalid", "workers"},
                oom_backoff=True)
def score(source: str = typer.Argument(None, help="Records carrying both edits (JSONL file, or - / stdin)."),
          ref: str = typer.Option("edit_clean", "--ref", help="Field of the reference image: the edit of the clean "
                                  "photo."),
          test: str = typer.Option("edit_immunized", "--test", help="Field of the image under test: the edit of "
                                   "the immunized photo."),
          metrics: str = typer.Option("ssim,psnr,vifp,fsim,srsim,gmsd,vsi,dss,haarpsi,fid,pr", "--metrics",
                                      help="Comma-separated, or all. Per pair: ssim psnr vifp fsim srsim gmsd vsi "
                                           "dss haarpsi (gmsd: lower = more similar); per set: fid, pr "
                                           "(precision as pr, recall as pr_recall)."),
          group_by: str = typer.Option("method", "--group-by", help="Record field(s), comma-separated, to "
                                       "summarise by ('' for one group). Records are keyed by (group, id): the "
                                       "random/encoder/diffusion outputs of the same photos may share ids, the "
                                       "same (method, id) twice is refused."),
          transforms: str = typer.Option(None, "--transforms", help="Robustness report, e.g. jpeg:75,resize:0.5,"
                                         "blur:1: also score the edit of each transformed immunized image "
                                         "(<test>_<transform>: edit_immunized_jpeg_75) against the edit of the "
                                         "clean photo after the same transform (<ref>_<transform>: "
                                         "edit_clean_jpeg_75), both written by `immunize edit --transform`, so a "
                                         "transform alone never counts as protection."),
          fid_weights: Path = typer.Option(None, "--fid-weights", exists=True, dir_okay=False,
                                           help="pytorch-fid InceptionV3 weights (pt_inception-2015-12-05-"
                                                "6726825d.pth or .safetensors) for FID/PR; never downloaded."),
          features: str = typer.Option("inception", "--features", help="Features for FID/PR: inception (needs "
                                       "--fid-weights) or vae (the VAE of --model-dir: a proxy, not comparable "
                                       "with published FID)."),
          model_dir: Path = typer.Option(None, "--model-dir", help="Local diffusers LDM directory, or a single-file "
                                         "checkpoint with --config-dir (--features vae)."),
          config_dir: Path = OPTIONS["config_dir"],
          clip: Path = typer.Option(None, "--clip", help="Local CLIP directory (transformers' CLIPModel + "
                                    "CLIPProcessor, e.g. a downloaded openai/clip-vit-large-patch14, or `immunize "
                                    "tiny-clip`): adds the prompt–image cosine similarity of both edits (thesis "
                                    "Fig. 4.6) as clip {ref, test} per record and clip_ref / clip_test in the "
                                    "summary. Never downloads."),
          small_images: str = typer.Option("upsample", "--small-images", help="A metric whose minimum size the "
                                           "images miss (VIFp 41 px, SR-SIM 40, DSS 32, HaarPSI 16, SSIM 11): "
                                           "upsample (integer nearest-neighbour factor, noted) or skip (null, "
                                           "with the reason)."),
          nearest_k: int = typer.Option(5, "--nearest-k", min=1, help="k of the precision/recall manifolds."),
          summary_path: Path = typer.Option(None, "--summary", help="Also write the summary records here (JSON)."),
          trust_pickle: bool = OPTIONS["trust_pickle"],
          force: bool = typer.Option(False, "--force", help="Write over a --summary immunize did not write."),
          *, common: Common) -> None:
    """Score how similar edit(immunized) is to edit(clean): lower similarity = better protection.

    Adds `metrics` (and `metrics_transformed`, `metrics_notes`) to every record; after the input
    ends, writes one {"kind": "immunize.summary"} record per group and transform (mean ± std per
    metric, FID and precision/recall over the group's set of edits) and prints the table on stderr.
    """

    from confidently.cli import stream_batches
    from confidently.immunize.metrics import ScoreSummary, parse_metrics
    from confidently.immunize.scoring import EditScorer, ScoreWriter
    from confidently.immunize.transforms import parse_transforms
    from confidently.run.device import resolve_device

    guard_output(summary_path, "immunize", force=force)
    pair_names, set_names = parse_metrics(metrics)
    variants = parse_transforms(transforms)
    if small_images not in ("upsample", "skip"):
        raise UsageError(f"--small-images {small_images!r}: choose upsample or skip")
    if ref == test:
        raise UsageError(f"--ref and --test both name {ref!r}; compare two different fields")
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    device = resolve_device(common.device)
    feature_fn, feature_name, no_features = _score_features(set_names, features, fid_weights, model_dir, device,
                                                            trust_pickle, config_dir)
    similarity = None
    if clip is not None:
        from confidently.immunize.clip import ClipSimilarity

        similarity = ClipSimilarity(clip, device, trust_pickle=trust_pickle)
    summary = ScoreSummary(pair_names, set_names, group_by=groups, ref_field=ref, test_field=test,
                           transforms=variants, features=feature_name, features_skipped=no_features,
                           nearest_k=nearest_k, clip=None if similarity is None else similarity.name)
    scorer = EditScorer(summary, ref, test, variants, pair_names, small_images=small_images, device=device,
                        batch_size=common.batch_size, features=feature_fn, clip=similarity)
    stream_batches(records_of(source, tuple(groups)), scorer, common, batch_size=common.batch_size,
                   writer=ScoreWriter(summary),
                   description="scoring", load=scorer.load)
    summaries = [{"tool": "immunize", **s, "tool_version": __version__} for s in summary.records()]
    writer = RecordWriter()
    for record in summaries:
        writer.write(record)
    if summary_path is not None:
        write_json_atomic(summary_path, summaries)
    _show_scores(summaries, groups, pair_names, set_names)


def main() -> None:
    run_app(app, "immunize")


if __name__ == "__main__":
    main()
