"""The per-record work of ``immunize encoder|diffusion|random`` (:class:`Immunizer`) and ``immunize edit``
(:class:`Editor`): each reads a record, computes, writes its PNG and safetensors files under the output
folder (named by :func:`~confidently.io.records.file_stem` of the id) and returns the output record."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from confidently import __version__
from confidently.errors import InvalidInput
from confidently.immunize.attacks import PGDConfig, Request, batchable, check_request, immunize_batch
from confidently.immunize.editing import EditConfig, edit_image
from confidently.immunize.inputs import Pictures, Prompts, output_base, record_seed
from confidently.immunize.models import LatentDiffusion, configured_mode
from confidently.immunize.pixels import quantize_within_bound, save_uint8
from confidently.immunize.transforms import apply_transform, transform_field
from confidently.io.artifacts import artifact_metadata, load_artifact_metadata, save_artifact
from confidently.io.records import Record, file_stem
from confidently.run.device import with_batch_backoff
from confidently.run.seeding import derive_seed


class Immunizer:
    """Immunizes one record: load, attack, quantise + re-project, write PNG and safetensors, build the record.

    ``seed`` is the run's (a record's own ``seed`` field wins), ``run_config`` what the files' metadata records
    of the run, ``log`` where progress lines go (``verbose``: every fifth attack step too). With ``resume``, a
    record whose files were written with the same settings is read back instead of attacked again.
    """

    def __init__(self, method: str, ldm: LatentDiffusion, pictures: Pictures, prompts: Prompts | None,
                 config: PGDConfig, out_dir: Path, image_format: str, *, seed: int, mode: str, target: str,
                 preset: str, edit: EditConfig | None = None, attack_prompt: str = "",
                 attack_prompt_from_record: bool = False, eot_noise: str = "fresh", resume: bool = False,
                 run_config: dict[str, Any] | None = None, log: Callable[[str], None] = lambda message: None,
                 verbose: bool = False):
        self.method, self.ldm, self.pictures, self.prompts, self.config = method, ldm, pictures, prompts, config
        self.out_dir, self.suffix, self.mode, self.target = out_dir, f".{image_format}", mode, target
        self.seed, self.run_config, self.log, self.verbose = seed, run_config or {}, log, verbose
        self.preset, self.edit, self.attack_prompt, self.from_record = preset, edit, attack_prompt, \
            attack_prompt_from_record
        self.eot_noise, self.resume = eot_noise, resume
        self.fingerprint = ldm.fingerprint()
        self.fits: int | None = None  # photos per attack step that fit on the device, once one did not

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
                "default_seed": self.seed,
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
        self.log(f"{record.id}: finished before with the same settings (--resume): reused")
        return {**output_base(record), **dict(meta["result"])}  # pairs: the field order of the first run

    def attack_edit(self, mode: str) -> EditConfig | None:
        """The diffusion attack's editing loop in the record's mode (the default strength depends on it)."""
        return None if self.edit is None else replace(self.edit, mode=mode)

    def record_mode(self, mask: torch.Tensor | None) -> str:
        if self.mode != "auto":
            return self.mode
        return configured_mode(self.ldm.model_dir) or ("inpaint" if mask is not None else "img2img")

    def prepare(self, record: Record) -> tuple[Request, torch.Tensor | None, tuple[int, int]]:
        """A record's attack request (its photo, mask, mode, seed and conditioning), its mask and original size."""
        x, original = self.pictures.image(record)
        mask = self.pictures.mask(record, original)
        mode = self.record_mode(mask)
        seed = record_seed(record, self.seed)
        cond = None
        if self.method == "diffusion":
            cond = self.prompts.attack(record, self.attack_prompt, self.from_record)
            if mode == "inpaint" and mask is None:
                raise record.error("the diffusion attack on an inpainting model needs a mask (1 = regenerate)",
                                   "mask")
        request = Request(x=x.unsqueeze(0), mask=None if mask is None else mask.unsqueeze(0), mode=mode,
                          target=self.target, seed=seed, key=record.id, cond=cond, edit=self.attack_edit(mode),
                          base_dir=record.base_dir, noise=self.eot_noise)
        try:
            check_request(self.ldm, request)
        except InvalidInput as exc:
            raise record.error(exc.message, exc.field) from None
        return request, mask, original

    def __call__(self, record: Record) -> dict[str, Any]:
        result = self.process_batch([record])[0]
        if isinstance(result, InvalidInput):
            raise result
        return result

    def process_batch(self, records: list[Record]) -> list[dict[str, Any] | InvalidInput]:
        """Immunize up to ``--batch-size`` records at once: finished ones (``--resume``) are reused, bad ones
        come back as their error, and the rest run as batches of compatible requests (same size, mode, mask
        presence and attack conditioning), each formed in stream order from the first request not yet
        placed: mixed sizes make several batches, and a photo's result does not depend on its batch."""
        results: list[dict[str, Any] | InvalidInput | None] = [None] * len(records)
        pending: list[tuple[int, Request, torch.Tensor | None, tuple[int, int]]] = []
        for index, record in enumerate(records):
            try:
                done = self.finished(record)
                if done is not None:
                    results[index] = done
                    continue
                pending.append((index, *self.prepare(record)))
            except InvalidInput as exc:
                results[index] = exc
        groups: list[list[tuple[int, Request, torch.Tensor | None, tuple[int, int]]]] = []
        for item in pending:
            group = next((g for g in groups if batchable(g[0][1], item[1])), None)
            if group is None:
                groups.append([item])
            else:
                group.append(item)
        for group in groups:
            requests = [request for _, request, _, _ in group]
            try:
                immunized: list[Any] = self.attack([records[index] for index, *_ in group], requests)
            except InvalidInput as exc:
                if len(group) == 1:
                    results[group[0][0]] = records[group[0][0]].error(exc.message, exc.field)
                    continue
                immunized = [None] * len(group)  # one photo's problem: run them alone, the error lands on its own
            for position, (index, request, mask, original) in enumerate(group):
                record = records[index]
                try:
                    result = immunized[position]
                    if result is None:
                        result = immunize_batch(self.ldm, [request], self.method, self.config,
                                                self.progress([record]))[0]
                    results[index] = self.write(record, result, mask, request.mode, request.seed, original)
                except InvalidInput as exc:
                    results[index] = record.error(exc.message, exc.field)
        return results  # type: ignore[return-value]

    def attack(self, members: list[Record], requests: list[Request]) -> list[Any]:
        """``requests`` attacked together, in parts that fit: on a CUDA out-of-memory error the part size halves
        (and stays so for the run). A photo's result does not depend on its batch, so the parts change nothing."""
        def in_parts(size: int) -> list[Any]:
            done: list[Any] = []
            for start in range(0, len(requests), size):
                done += immunize_batch(self.ldm, requests[start:start + size], self.method, self.config,
                                       self.progress(members[start:start + size]))
            return done

        immunized, size = with_batch_backoff(in_parts, min(len(requests), self.fits or len(requests)))
        if size < len(requests):
            self.fits = size
        return immunized

    def progress(self, members: list[Record]) -> Callable[[int, list[float]], None] | None:
        """With ``verbose``, a batch's progress: every fifth attack step, each record's loss."""
        if not self.verbose:
            return None
        every = max(1, self.config.steps // 5)

        def on_step(n: int, losses: list[float]) -> None:
            if n % every == 0 or n == self.config.steps - 1:
                for record, loss in zip(members, losses, strict=True):
                    self.log(f"{record.id}: step {n + 1}/{self.config.steps} loss {loss:.4g}")

        return on_step

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
            tool="immunize", kind="immunized", config=self.run_config, seed=seed, record_id=record.id,
            model_fingerprint=self.fingerprint, diffusers_version=diffusers.__version__,
            torch_version=torch.__version__, guarantee="none", settings=self.settings(record), result=list(own.items()),
            **fields))
        out = {**output_base(record), **own}
        if out["loss_init"] is not None:
            self.log(f"{record.id}: {self.method} loss {out['loss_init']:.4g} → {out['loss_final']:.4g} "
                             f"(ℓ∞ {png_linf}/255 in the file, {out['seconds']:.1f} s)")
        else:
            self.log(f"{record.id}: {self.method} (ℓ∞ {png_linf}/255 in the file)")
        return out


EDIT_OUTPUTS = {"image": "edit_clean", "immunized": "edit_immunized"}


class Editor:
    """Edits every listed image of a record with the record's prompt, mask and seed (the same for all)."""

    def __init__(self, ldm: LatentDiffusion, pictures: Pictures, prompts: Prompts, config: EditConfig,
                 fields: list[str], negative_prompt: str, paste: bool, transforms: list, out_dir: Path, *,
                 seed: int, run_config: dict[str, Any] | None = None,
                 log: Callable[[str], None] = lambda message: None, backend: str = "pipeline"):
        self.ldm, self.pictures, self.prompts, self.config = ldm, pictures, prompts, config
        self.backend = backend
        self.fields, self.negative, self.paste, self.transforms = fields, negative_prompt, paste, transforms
        self.out_dir, self.seed, self.run_config, self.log = out_dir, seed, run_config or {}, log

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
        seed = record_seed(record, self.seed) if seed is not None else \
            derive_seed(self.seed, record.id, "edit")
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
            key = EDIT_OUTPUTS.get(field, f"edit_{field}")
            # every field is also edited after each transform: the clean photo's is the control, so score compares
            # edit(transform(immunized)) with edit(transform(photo)) and a transform never counts as protection
            variants = [(key, image), *((transform_field(key, t), apply_transform(image, t))
                                        for t in self.transforms)]
            for key, picture in variants:
                edited = edit_image(self.ldm, picture, cond, self.config, seed, mask, paste=self.paste,
                                    original=photo, backend=self.backend)
                path = self.out_dir / f"{name}.{key}.png"
                save_uint8((edited.clamp(0, 1) * 255).round().to(torch.uint8), path)
                outputs[key], tensors[key] = str(path), edited
        tensors_path = self.out_dir / f"{name}.edits.safetensors"
        save_artifact(tensors_path, tensors, artifact_metadata(
            tool="immunize", kind="edits", config=self.run_config, seed=seed, record_id=record.id,
            scheduler="DDIMScheduler", backend=self.backend, model_fingerprint=self.ldm.fingerprint()))
        self.log(f"{record.id}: edited {', '.join(outputs)} (seed {seed})")
        out = output_base(record)
        out.update({"kind": "immunize.edited", "tool_version": __version__, **outputs,
                    "edit_tensors": str(tensors_path),
                    "edit_config": {"mode": self.config.mode, "steps": self.config.steps,
                                    "denoised_steps": self.config.denoised_steps,
                                    "guidance": self.config.guidance, "eta": self.config.eta,
                                    "strength": self.config.effective_strength, "scheduler": "DDIMScheduler",
                                    "backend": self.backend, "dtype": str(self.ldm.dtype).removeprefix("torch."),
                                    "seed": seed, "negative_prompt": self.negative, "paste_back": self.paste,
                                    "transforms": [t.spec for t in self.transforms]}})
        return out
