"""`immunize`: perturb photos so latent-diffusion editing fails (PhotoGuard, thesis ch. 4); edit and score."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import typer
from confidently import __version__
from confidently.cli import Common, common_options, input_source, run_app, stream_records, tool_app
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import (
    PRESETS,
    EditConfig,
    LatentDiffusion,
    PGDConfig,
    Request,
    check_output_format,
    configured_mode,
    edit_image,
    immunize,
    load_ldm,
    parse_fraction,
    quantize_within_bound,
    resolve_mode,
    save_uint8,
    write_tiny_model,
)
from confidently.immunize.inputs import Pictures, Prompts, output_base, record_seed
from confidently.immunize.transforms import apply_transform, parse_transforms, transform_field
from confidently.io.artifacts import artifact_metadata, load_artifact_metadata, save_artifact
from confidently.io.atomic import claim_folder, guard_output, write_json_atomic
from confidently.io.images import ImageLoader
from confidently.io.records import Record, RecordReader, RecordWriter, file_stem
from confidently.run import console, derive_seed, resolve_device

NOT_A_GUARANTEE = ("Immunization raises the cost of editing with the model it was computed against; it is not a "
                   "guarantee: cropping, resizing, filters, JPEG, diffusion purification or another model can "
                   "remove it.")
app = tool_app("immunize", "Immunize photos against diffusion-model editing (PhotoGuard), edit them, score the "
                           f"edits. {NOT_A_GUARANTEE}")

MODEL_DIR = typer.Option(..., "--model-dir", help="Local diffusers LDM directory (SD v1.5 layout: vae/, unet/, "
                                                  "scheduler/, text_encoder/+tokenizer/ or toy_text/).")
OPTIONS: dict[str, Any] = {
    "input": typer.Argument(None, help="JSONL records (id, image, optional mask, prompt, seed, prompt_embeds); "
                                       "- or nothing for stdin."),
    "out_dir": typer.Option(..., "--out-dir", help="Folder for the per-image PNG and safetensors files."),
    "force": typer.Option(False, "--force", help="Write into a non-empty --out-dir immunize did not make."),
    "dtype": typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16 autocast on CUDA (CPU is always fp32)."),
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


def records_of(input_path: str | None) -> RecordReader:
    return RecordReader(input_source(input_path), yield_errors=True)


def log(common: Common, message: str) -> None:
    if not common.quiet:
        console.log(message)


# ---------------------------------------------------------------------------------------------------------
# immunize tiny-model


@app.command("tiny-model")
@common_options(uses={"seed"})
def tiny_model(out: Path = typer.Option(..., "--out", help="Directory to write (diffusers layout)."),
               size: int = typer.Option(32, "--size", min=8, help="Image side the model is sized for."),
               unet: str = typer.Option("inpaint", "--unet", help="inpaint (9-channel UNet) or img2img (4)."),
               force: bool = typer.Option(False, "--force", help="Write into a non-empty --out immunize did not "
                                          "make."),
               *, common: Common) -> None:
    """Write a small randomly initialised LDM directory (tiny VAE, UNet, DDIM, hash text encoder) for tests."""
    claim_folder(out, "immunize", force=force)
    write_tiny_model(out, size=size, unet=unet, seed=common.seed)
    RecordWriter().write({"kind": "immunize.model", "tool_version": __version__, "model_dir": str(out),
                          "size": size, "unet": unet, "seed": common.seed, "downsampling": 2,
                          "note": "random weights: for tests and laptops, not a real editor"})
    log(common, f"wrote a tiny {unet} model to {out}")


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
    return PGDConfig(norm=norm, grad_reps=grad_reps, **values)


class Immunizer:
    """Immunizes one record: load, attack, quantise + re-project, write PNG and safetensors, build the record."""

    def __init__(self, method: str, ldm: LatentDiffusion, pictures: Pictures, prompts: Prompts | None,
                 config: PGDConfig, out_dir: Path, image_format: str, common: Common, *, mode: str, target: str,
                 preset: str, edit: EditConfig | None = None, attack_prompt: str = "",
                 attack_prompt_from_record: bool = False, eot_noise: str = "fresh", resume: bool = False):
        self.method, self.ldm, self.pictures, self.prompts, self.config = method, ldm, pictures, prompts, config
        self.out_dir, self.suffix, self.common, self.mode, self.target = out_dir, f".{image_format}", common, mode, \
            target
        self.preset, self.edit, self.attack_prompt, self.from_record = preset, edit, attack_prompt, \
            attack_prompt_from_record
        self.eot_noise, self.resume = eot_noise, resume
        self.fingerprint = ldm.fingerprint()

    def settings(self, record: Record) -> dict[str, Any]:
        """Everything that determines a record's result: a finished file with the same settings is reused."""
        edit = None if self.edit is None else [self.edit.steps, self.edit.guidance, self.edit.eta,
                                               self.edit.strength, self.edit.checkpointing]
        return {"method": self.method, "pgd": [self.config.eps, self.config.step, self.config.steps,
                                                self.config.norm, self.config.random_start,
                                                self.config.step_schedule, self.config.grad_reps],
                "edit": edit, "mode": self.mode, "target": self.target, "size": self.pictures.size,
                "invert_mask": self.pictures.invert, "attack_prompt": [self.attack_prompt, self.from_record],
                "eot_noise": self.eot_noise, "model": self.fingerprint, "format": self.suffix,
                "default_seed": self.common.seed,
                "input": {k: record.data.get(k) for k in ("image", "mask", "prompt", "seed", "prompt_embeds")}}

    def finished(self, record: Record) -> dict[str, Any] | None:
        name = file_stem(record.id)
        tensors_path, png = self.out_dir / f"{name}.safetensors", self.out_dir / f"{name}{self.suffix}"
        if not (self.resume and tensors_path.is_file() and png.is_file()):
            return None
        try:
            meta = load_artifact_metadata(tensors_path)
        except InvalidInput:
            return None
        if meta.get("record_id") != record.id or meta.get("settings") != json.loads(json.dumps(self.settings(record))):
            return None
        log(self.common, f"{record.id}: finished before with the same settings (--resume): reused")
        return {**output_base(record), **dict(meta["result"])}  # pairs: the field order of the first run

    def attack_edit(self, mode: str) -> EditConfig | None:
        """The diffusion attack's editing loop in the record's mode (the default strength depends on it)."""
        return None if self.edit is None else replace(self.edit, mode=mode)

    def record_mode(self, mask: torch.Tensor | None) -> str:
        if self.mode != "auto":
            return self.mode
        return configured_mode(self.ldm.model_dir) or ("inpaint" if mask is not None else "img2img")

    def __call__(self, record: Record) -> dict[str, Any]:
        done = self.finished(record)
        if done is not None:
            return done
        x, original = self.pictures.image(record)
        mask = self.pictures.mask(record, original)
        mode = self.record_mode(mask)
        seed = record_seed(record, self.common.seed)
        cond = None
        if self.method == "diffusion":
            cond = self.prompts.attack(record, self.attack_prompt, self.from_record)
            if mode == "inpaint" and mask is None:
                raise record.error("the diffusion attack on an inpainting model needs a mask (1 = regenerate)",
                                   "mask")
        edit = self.attack_edit(mode)
        request = Request(x=x.unsqueeze(0), mask=None if mask is None else mask.unsqueeze(0), mode=mode,
                          target=self.target, seed=seed, key=record.id, cond=cond, edit=edit,
                          base_dir=record.base_dir, noise=self.eot_noise)
        every = max(1, self.config.steps // 5)

        def on_step(n: int, loss: float) -> None:
            if self.common.verbose and (n % every == 0 or n == self.config.steps - 1):
                console.log(f"{record.id}: step {n + 1}/{self.config.steps} loss {loss:.4g}")

        try:
            result = immunize(self.ldm, request, self.method, self.config, on_step)
        except InvalidInput as exc:
            raise record.error(exc.message, exc.field) from None
        return self.write(record, result, mask, mode, seed, original)

    def write(self, record: Record, result, mask: torch.Tensor | None, mode: str, seed: int,
              original: tuple[int, int]) -> dict[str, Any]:
        name = file_stem(record.id)
        png, tensors_path = self.out_dir / f"{name}{self.suffix}", self.out_dir / f"{name}.safetensors"
        x, x_adv = result.x[0].cpu(), result.x_adv[0].cpu()
        keep = None if mask is None else 1 - mask
        x_u8, adv_u8 = quantize_within_bound(x_adv, x, self.config.eps, keep, self.config.norm)
        save_uint8(adv_u8, png)
        delta = x_adv - x
        tensors = {"x": x, "x_adv": x_adv, "delta": delta, "x_u8": x_u8, "x_adv_u8": adv_u8,
                   "loss": torch.tensor(result.losses, dtype=torch.float32)}
        if mask is not None:
            tensors["mask"] = mask
        tensors.update({key: value.cpu().float() for key, value in result.tensors.items()})
        png_linf = int((adv_u8.int() - x_u8.int()).abs().max())
        size = float(delta.abs().max()) if self.config.norm == "linf" else float(delta.norm())
        fields = {"method": self.method, "mode": mode, "eps": self.config.eps, "step": self.config.step,
                  "steps": self.config.steps, "norm": self.config.norm, "preset": self.preset,
                  "random_start": self.config.random_start, "step_schedule": self.config.step_schedule,
                  "target": self.target, "attack_seed": seed}
        if self.method == "diffusion":
            edit = self.attack_edit(mode)
            fields.update({"grad_reps": self.config.grad_reps, "attack_denoise_steps": edit.denoised_steps,
                           "attack_denoise_steps_requested": edit.steps, "attack_strength": edit.effective_strength,
                           "guidance": self.edit.guidance, "eta": self.edit.eta,
                           "checkpointing": self.edit.checkpointing, "eot_noise": self.eot_noise,
                           "attack_prompt": "<record>" if self.from_record else self.attack_prompt})
        import diffusers

        own = {"kind": "immunize.immunized", "tool_version": __version__, "immunized": str(png),
                  "tensors": str(tensors_path), **fields,
                  "linf" if self.config.norm == "linf" else "l2": size, "linf_png": png_linf / 255,
                  "size": [int(x.shape[-2]), int(x.shape[-1])],
                  "resized": list(original) != [int(x.shape[-2]), int(x.shape[-1])],
                  "loss_init": result.loss_init, "loss_final": result.loss_final,
                  "seconds": round(result.seconds, 4), "model_fingerprint": self.fingerprint,
                  "guarantee": "none"}
        if self.suffix != ".png":
            own["lossy"] = True
        save_artifact(tensors_path, tensors, artifact_metadata(
            tool="immunize", kind="immunized", config=self.common.config, seed=seed, record_id=record.id,
            model_fingerprint=self.fingerprint, diffusers_version=diffusers.__version__,
            torch_version=torch.__version__, guarantee="none", settings=self.settings(record), result=list(own.items()),
            **fields))
        out = {**output_base(record), **own}
        if out["loss_init"] is not None:
            log(self.common, f"{record.id}: {self.method} loss {out['loss_init']:.4g} → {out['loss_final']:.4g} "
                             f"(ℓ∞ {png_linf}/255 in the file, {out['seconds']:.1f} s)")
        else:
            log(self.common, f"{record.id}: {self.method} (ℓ∞ {png_linf}/255 in the file)")
        return out


def run_attack(method: str, input_path: str | None, model_dir: Path, out_dir: Path, dtype: str, size: str,
               mask_convention: str, mode: str, config: PGDConfig, preset: str, target: str, image_format: str,
               allow_lossy: bool, common: Common, trust_pickle: bool = False, **extra: Any) -> None:
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
    ldm = load_ldm(model_dir, device, dtype, parts=parts, trust_pickle=trust_pickle)
    if method == "diffusion" and device.type == "cpu" and not extra.pop("force", False):
        params = sum(p.numel() for p in ldm.unet.parameters())
        if params > 100_000_000:
            raise UsageError(f"the diffusion attack on a {params / 1e6:.0f}M-parameter UNet on CPU would take days; "
                             "use a GPU, the encoder attack, or --force")
    extra.pop("force", None)
    if method == "diffusion":
        mode_now = configured_mode(model_dir)
        if mode not in ("auto", mode_now):
            raise UsageError(f"--mode {mode}: {model_dir}/unet is an {mode_now} model")
    pictures = Pictures(ldm, size, mask_convention)
    prompts = Prompts(ldm, extra.pop("prompt_embeds", None)) if method == "diffusion" else None
    out_dir.mkdir(parents=True, exist_ok=True)
    worker = Immunizer(method, ldm, pictures, prompts, config, out_dir, image_format, common, mode=mode,
                       target=target, preset=preset, **extra)
    budget = f"eps {config.eps * 255:.3g}/255" if config.norm == "linf" else f"L2 radius {config.eps:g}"
    steps = "" if method == "random" else f", step {config.step * 255:.3g}/255, {config.steps} steps"
    log(common, f"{method}: {config.norm} {budget}{steps}, on {device}. {NOT_A_GUARANTEE}")
    stream_records(records_of(input_path), worker, common, description=method)


@app.command()
@common_options(uses={"seed", "device", "shard", "engine", "address", "skip_invalid", "deterministic"})
def encoder(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
            preset: str = ENCODER_OPTIONS["preset"], eps: str = ENCODER_OPTIONS["eps"],
            step: str = ENCODER_OPTIONS["step"], steps: int = ENCODER_OPTIONS["steps"],
            norm: str = ENCODER_OPTIONS["norm"], target: str = ENCODER_OPTIONS["target"],
            random_start: bool = ENCODER_OPTIONS["random_start"],
            step_schedule: str = ENCODER_OPTIONS["step_schedule"], mode: str = OPTIONS["mode"],
            size: str = OPTIONS["size"], mask_convention: str = OPTIONS["mask_convention"],
            dtype: str = OPTIONS["dtype"], image_format: str = ENCODER_OPTIONS["image_format"],
            allow_lossy: bool = ENCODER_OPTIONS["allow_lossy"], resume: bool = ENCODER_OPTIONS["resume"],
            trust_pickle: bool = OPTIONS["trust_pickle"], force: bool = OPTIONS["force"], *, common: Common) -> None:
    """Encoder attack: PGD pushing the VAE latent toward the target's (cheap; needs only vae/).

    With a mask, only the kept region (mask 0) is perturbed and, for inpainting models, the loss is taken
    on the masked image the editor encodes. Not a guarantee: see `immunize --help`.
    """
    config = pgd_config(preset, eps, step, steps, norm, random_start, step_schedule, 1, common)
    run_attack("encoder", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               target, image_format, allow_lossy, common, trust_pickle, resume=resume, force=force)


@app.command()
@common_options(uses={"seed", "device", "shard", "engine", "address", "skip_invalid", "deterministic"})
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
              trust_pickle: bool = OPTIONS["trust_pickle"], *, common: Common) -> None:
    """Diffusion attack: PGD through K checkpointed denoising steps of the edit, pushing its output toward
    the target (expensive; needs vae/, unet/, scheduler/ and a text encoder or prompt embeddings)."""
    config = pgd_config(preset, eps, step, steps, norm, random_start, step_schedule, grad_reps, common)
    edit = EditConfig("inpaint", attack_denoise_steps, guidance, eta, strength, checkpointing)
    run_attack("diffusion", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               target, image_format, allow_lossy, common, trust_pickle, edit=edit, attack_prompt=attack_prompt,
               attack_prompt_from_record=attack_prompt_from_record, eot_noise=eot_noise, force=force,
               prompt_embeds=prompt_embeds, resume=resume)


@app.command("random")
@common_options(uses={"seed", "device", "shard", "engine", "address", "skip_invalid", "deterministic"})
def random_noise(input_path: str = OPTIONS["input"], model_dir: Path = MODEL_DIR, out_dir: Path = OPTIONS["out_dir"],
                 preset: str = ENCODER_OPTIONS["preset"], eps: str = ENCODER_OPTIONS["eps"],
                 norm: str = ENCODER_OPTIONS["norm"], mode: str = OPTIONS["mode"], size: str = OPTIONS["size"],
                 mask_convention: str = OPTIONS["mask_convention"], dtype: str = OPTIONS["dtype"],
                 image_format: str = ENCODER_OPTIONS["image_format"],
                 allow_lossy: bool = ENCODER_OPTIONS["allow_lossy"], resume: bool = ENCODER_OPTIONS["resume"],
                 trust_pickle: bool = OPTIONS["trust_pickle"], force: bool = OPTIONS["force"],
                 *, common: Common) -> None:
    """Baseline: x + U[-eps, eps] per pixel (same budget, same mask), clipped to [0, 1]."""
    config = replace(pgd_config(preset, eps, "1/255", 0, norm, False, "constant", 1, common), steps=0,
                     random_start=False)
    run_attack("random", input_path, model_dir, out_dir, dtype, size, mask_convention, mode, config, preset,
               "gray", image_format, allow_lossy, common, trust_pickle, resume=resume, force=force)


# ---------------------------------------------------------------------------------------------------------
# immunize edit

EDIT_OUTPUTS = {"image": "edit_clean", "immunized": "edit_immunized"}


class Editor:
    """Edits every listed image of a record with the record's prompt, mask and seed (the same for all)."""

    def __init__(self, ldm: LatentDiffusion, pictures: Pictures, prompts: Prompts, config: EditConfig,
                 fields: list[str], negative_prompt: str, paste: bool, transforms: list, out_dir: Path,
                 common: Common):
        self.ldm, self.pictures, self.prompts, self.config = ldm, pictures, prompts, config
        self.fields, self.negative, self.paste, self.transforms = fields, negative_prompt, paste, transforms
        self.out_dir, self.common = out_dir, common

    def __call__(self, record: Record) -> dict[str, Any]:
        present = [f for f in self.fields if record.data.get(f) is not None]
        if not present:
            raise record.error(f"none of the fields to edit ({', '.join(self.fields)}) is in the record",
                               self.fields[0])
        prompt = record.data.get("prompt", "")
        if not isinstance(prompt, str):
            raise record.error("expected a prompt string", "prompt")
        cond = self.prompts.get(record, prompt, self.negative)
        seed = record.data.get("seed")
        seed = record_seed(record, self.common.seed) if seed is not None else \
            derive_seed(self.common.seed, record.id, "edit")
        # the photo sets the edit size, the mask's size and, for inpainting, the pixels pasted back
        photo, photo_size = self.pictures.image(record) if record.data.get("image") is not None else (None, None)
        if self.paste and self.config.mode == "inpaint" and photo is None:
            raise record.error("paste-back puts the original photo's pixels back in the kept region: the record "
                               "needs its \"image\" (or pass --no-paste-back)", "image")
        images = {field: photo if field == "image" else self.pictures.copy(record, field, photo) for field in present}
        mask = self.pictures.mask(record, photo_size or tuple(images[present[0]].shape[-2:]))
        if self.config.mode == "inpaint" and mask is None:
            raise record.error("an inpainting model needs a mask (1 = regenerate): give the record a \"mask\" "
                               "or use an img2img model", "mask")
        name, outputs, tensors = file_stem(record.id), {}, {}
        for field, image in images.items():
            variants = [(EDIT_OUTPUTS.get(field, f"edit_{field}"), image)]
            if field == "immunized":
                variants += [(transform_field("edit_immunized", t), apply_transform(image, t))
                             for t in self.transforms]
            for key, picture in variants:
                edited = edit_image(self.ldm, picture, cond, self.config, seed, mask, paste=self.paste,
                                    original=photo)
                path = self.out_dir / f"{name}.{key}.png"
                save_uint8((edited.clamp(0, 1) * 255).round().to(torch.uint8), path)
                outputs[key], tensors[key] = str(path), edited
        tensors_path = self.out_dir / f"{name}.edits.safetensors"
        save_artifact(tensors_path, tensors, artifact_metadata(
            tool="immunize", kind="edits", config=self.common.config, seed=seed, record_id=record.id,
            scheduler="DDIMScheduler", model_fingerprint=self.ldm.fingerprint()))
        log(self.common, f"{record.id}: edited {', '.join(outputs)} (seed {seed})")
        out = output_base(record)
        out.update({"kind": "immunize.edited", "tool_version": __version__, **outputs,
                    "edit_tensors": str(tensors_path),
                    "edit_config": {"mode": self.config.mode, "steps": self.config.steps,
                                    "denoised_steps": self.config.denoised_steps,
                                    "guidance": self.config.guidance, "eta": self.config.eta,
                                    "strength": self.config.effective_strength, "scheduler": "DDIMScheduler",
                                    "seed": seed, "negative_prompt": self.negative, "paste_back": self.paste,
                                    "transforms": [t.spec for t in self.transforms]}})
        return out


@app.command()
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
                                             help="Also edit the immunized image after jpeg:Q, resize:S or blur:S "
                                                  "(field edit_immunized_<transform>); repeatable or comma list."),
         prompt_embeds: Path = OPTIONS["prompt_embeds"], size: str = OPTIONS["size"],
         mask_convention: str = OPTIONS["mask_convention"], dtype: str = OPTIONS["dtype"],
         trust_pickle: bool = OPTIONS["trust_pickle"], force: bool = OPTIONS["force"], *, common: Common) -> None:
    """Edit clean and immunized images with the same prompt, mask and seed (DDIM from the checkpoint's config)."""
    names = [f.strip() for f in fields.split(",") if f.strip()]
    if not names:
        raise UsageError("--fields: name at least one record field holding an image")
    transforms = parse_transforms(transform or [])
    claim_folder(out_dir, "immunize", force=force)
    ldm = load_ldm(model_dir, resolve_device(common.device), dtype, trust_pickle=trust_pickle)
    config = EditConfig(resolve_mode(ldm, mode), steps, guidance, eta, strength)
    pictures, prompts = Pictures(ldm, size, mask_convention), Prompts(ldm, prompt_embeds)
    out_dir.mkdir(parents=True, exist_ok=True)
    editor = Editor(ldm, pictures, prompts, config, names, negative_prompt, paste_back, transforms, out_dir, common)
    log(common, f"edit: {config.mode}, {steps} DDIM steps, guidance {guidance}, eta {eta}, "
                f"strength {config.effective_strength}")
    stream_records(records_of(input_path), editor, common, description="edit")


# ---------------------------------------------------------------------------------------------------------
# immunize score (metrics between edits: lib/confidently/immunize/metrics.py)

SCORE_FEATURES = ("inception", "vae")
NO_INCEPTION = ("no Inception weights: pass --fid-weights FILE (the pytorch-fid pt_inception-2015-12-05 state "
                "dict; never downloaded) or --features vae --model-dir DIR (a non-comparable proxy)")


class _ScoreWriter(RecordWriter):
    """Writes per-record scores and feeds them (with the features that never reach stdout) to the summary."""

    def __init__(self, summary):
        super().__init__()
        self.summary = summary

    def write(self, record: dict) -> None:
        private = record.pop("_score", None)
        super().write(record)
        if private is None:
            return
        for variant, values, notes, ref_features, test_features in private["pairs"]:
            self.summary.add(private["group"], variant, values, notes=notes, ref_features=ref_features,
                             test_features=test_features)
        for variant in private["missing"]:
            self.summary.add_missing(private["group"], variant)


def _score_features(names: list[str], features: str, fid_weights: Path | None, model_dir: Path | None,
                    device, trust_pickle: bool = False) -> tuple[object | None, str | None, str | None]:
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

    ldm = load_ldm(model_dir, device, parts=("vae",), trust_pickle=trust_pickle)
    return latent_features(lambda images: ldm.encode_mean(images * 2 - 1)), "vae", None


def _score_image(loader, record, name: str):
    return loader.load_field(record, name, origin=" (from `immunize edit`)")


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
    console.print(table)
    reasons: dict[str, list[str]] = {}
    for s in summaries:
        for name, reason in s["skipped"].items():
            if name not in reasons.setdefault(reason, []):
                reasons[reason].append(name)
    for reason, names in reasons.items():
        console.print(f"{', '.join(names)} skipped: {reason}", markup=False)


@app.command()
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
                                       "summarise by ('' for one group)."),
          transforms: str = typer.Option(None, "--transforms", help="Robustness report, e.g. jpeg:75,resize:0.5,"
                                         "blur:1: also score the edit of each transformed immunized image, read "
                                         "from the field <test>_<transform> that `immunize edit --transform` "
                                         "writes (edit_immunized_jpeg_75, edit_immunized_resize_0p5)."),
          fid_weights: Path = typer.Option(None, "--fid-weights", exists=True, dir_okay=False,
                                           help="pytorch-fid InceptionV3 weights (pt_inception-2015-12-05-"
                                                "6726825d.pth or .safetensors) for FID/PR; never downloaded."),
          features: str = typer.Option("inception", "--features", help="Features for FID/PR: inception (needs "
                                       "--fid-weights) or vae (the VAE of --model-dir: a proxy, not comparable "
                                       "with published FID)."),
          model_dir: Path = typer.Option(None, "--model-dir", help="Local diffusers LDM directory (--features vae)."),
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
    from confidently.immunize.metrics import (
        ScoreSummary,
        extract_features,
        parse_metrics,
        score_image_pairs,
    )
    from confidently.run import with_batch_backoff

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
                                                            trust_pickle)
    summary = ScoreSummary(pair_names, set_names, group_by=groups, ref_field=ref, test_field=test,
                           transforms=variants, features=feature_name, features_skipped=no_features,
                           nearest_k=nearest_k)
    loader = ImageLoader(3)
    fields = [(None, test), *((t.spec, transform_field(test, t)) for t in variants)]

    def load(record) -> tuple[list, list[str]]:
        """A record's (ref image, test image, variant) pairs and the transformed edits it lacks."""
        clean = _score_image(loader, record, ref)
        found, missing = [], []
        for variant, name in fields:
            if variant is not None and record.data.get(name) is None:
                missing.append(variant)
                continue
            image = _score_image(loader, record, name)
            if image.shape != clean.shape:
                raise record.error(f"is {'×'.join(map(str, image.shape))} but {ref} is "
                                   f"{'×'.join(map(str, clean.shape))}; metrics compare images of one size", name)
            found.append((clean, image, variant))
        return found, missing

    def process(records: list, loaded: list[tuple[list, list[str]]]) -> list:
        pairs, owners = [], []  # (ref image, test image), (record index, variant)
        for i, (found, _) in enumerate(loaded):
            for clean, image, variant in found:
                pairs.append((clean, image))
                owners.append((i, variant))
        scores, _ = with_batch_backoff(lambda size: score_image_pairs(pairs, pair_names, small=small_images,
                                                                      device=device, batch_size=size),
                                       common.batch_size)
        ref_features = test_features = None
        if feature_fn is not None and pairs:
            firsts = {index: k for k, (index, _) in reversed(list(enumerate(owners)))}
            ref_rows, _ = with_batch_backoff(lambda size: extract_features(
                [pairs[k][0] for k in firsts.values()], feature_fn, device=device, batch_size=size), common.batch_size)
            ref_features = {index: ref_rows[j] for j, index in enumerate(firsts)}
            test_features, _ = with_batch_backoff(lambda size: extract_features(
                [image for _, image in pairs], feature_fn, device=device, batch_size=size), common.batch_size)
        results = []
        for i, (record, (_, missing)) in enumerate(zip(records, loaded, strict=True)):
            out = {**record.data, "kind": "immunize.scored", "tool_version": __version__}
            private = {"group": summary.group_of(record.data), "pairs": [], "missing": missing}
            for k, (index, variant) in enumerate(owners):
                if index != i:
                    continue
                values, notes = scores[k].values, scores[k].notes
                if variant is None:
                    out["metrics"] = values
                    if notes:
                        out["metrics_notes"] = notes
                else:
                    out.setdefault("metrics_transformed", {})[variant] = values
                private["pairs"].append((variant, values, notes, None if ref_features is None else ref_features[i],
                                         None if test_features is None else test_features[k]))
            out["_score"] = private
            results.append(out)
        return results

    stream_batches(records_of(source), process, common, batch_size=common.batch_size, writer=_ScoreWriter(summary),
                   description="scoring", load=load)
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
