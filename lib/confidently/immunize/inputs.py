"""What the immunize commands read per record: its photo, immunized copies and mask, fitted to the model
(:class:`Pictures`), its conditioning (:class:`Prompts`), its seed and the fields it passes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from confidently.errors import InvalidInput, UsageError
from confidently.immunize.models import LatentDiffusion
from confidently.immunize.pixels import fit_image
from confidently.immunize.text import Conditioning, conditioning, load_prompt_embeds
from confidently.io.images import ImageLoader
from confidently.io.records import Record, rebase_refs


def resolve_size(text: str, ldm: LatentDiffusion) -> int | None:
    """``--size``: auto (the VAE's sample_size), 0 (keep), or N (a multiple of the downsampling factor)."""
    factor = ldm.downsampling
    if text == "auto":
        sample = ldm.vae.config.sample_size
        size = int(sample[0] if isinstance(sample, (list, tuple)) else sample)
    else:
        try:
            size = int(text)
        except ValueError:
            raise UsageError(f"--size {text!r}: expected auto, 0 or a positive integer") from None
        if size == 0:
            return None
    if size < 0 or size % factor:
        raise UsageError(f"--size {size}: must be a positive multiple of the model's downsampling factor {factor}")
    return size


class Pictures:
    """Loads a record's images and mask: size checks, ``--size`` fitting, the mask convention."""

    def __init__(self, ldm: LatentDiffusion, size: str, mask_convention: str):
        if mask_convention not in ("regenerate", "keep"):
            raise UsageError(f"--mask-convention {mask_convention!r}: choose regenerate or keep")
        self.ldm, self.size, self.invert = ldm, resolve_size(size, ldm), mask_convention == "keep"
        self.images, self.masks = ImageLoader(3), ImageLoader(1)

    def _load(self, record: Record, field: str) -> torch.Tensor:
        return self.images.load_field(record, field)

    def _check_size(self, record: Record, field: str, image: torch.Tensor) -> None:
        try:
            self.ldm.check_size(*image.shape[-2:])
        except InvalidInput as exc:
            raise record.error(exc.message, field) from None

    def image(self, record: Record, field: str = "image") -> tuple[torch.Tensor, tuple[int, int]]:
        """The fitted image and its size before fitting."""
        image = self._load(record, field)
        original = tuple(image.shape[-2:])
        if self.size is not None:
            image = fit_image(image, self.size)
        self._check_size(record, field, image)
        return image, original

    def copy(self, record: Record, field: str, photo: torch.Tensor | None) -> torch.Tensor:
        """An immunized (or other derived) copy as stored, never resampled (resampling blurs the perturbation
        away): it must already have the size its photo (or ``--size``) is edited at."""
        image = self._load(record, field)
        if photo is not None:
            expected, what = tuple(photo.shape[-2:]), "its photo is edited at"
        else:
            expected, what = (None, None) if self.size is None else ((self.size, self.size), "--size is")
        if expected is not None and tuple(image.shape[-2:]) != expected:
            raise record.error(f"record {record.id!r}: {field} is {image.shape[-2]}×{image.shape[-1]} but {what} "
                               f"{expected[0]}×{expected[1]}; an immunized image is never resized (that erases its "
                               "perturbation): edit at the --size it was immunized at", field)
        self._check_size(record, field, image)
        return image

    def mask(self, record: Record, original: tuple[int, int]) -> torch.Tensor | None:
        """1×H×W, 1 = regenerate (after ``--mask-convention``), or None when the record has no mask."""
        if record.data.get("mask") is None:
            return None
        mask = self.masks.load_field(record, "mask")
        if tuple(mask.shape[-2:]) != original:
            raise record.error(f"mask is {mask.shape[-2]}×{mask.shape[-1]} but the image is "
                               f"{original[0]}×{original[1]}; a mask must match its image", "mask")
        if self.size is not None:
            mask = fit_image(mask, self.size, nearest=True)
        mask = (mask >= 0.5).float()
        return 1 - mask if self.invert else mask


class Prompts:
    """Conditioning per record: the record's prompt_embeds file, --prompt-embeds, or the text encoder."""

    def __init__(self, ldm: LatentDiffusion, embeds_file: Path | None):
        self.ldm = ldm
        self.default = load_prompt_embeds(embeds_file) if embeds_file else None
        self._cache: dict[tuple[str, str, str | None], Conditioning] = {}

    def embeds(self, record: Record) -> tuple[dict[str, torch.Tensor] | None, str | None]:
        ref = record.data.get("prompt_embeds")
        if ref is None:
            return self.default, None
        if not isinstance(ref, str):
            raise record.error("expected the path of a safetensors file with prompt_embeds", "prompt_embeds")
        path = str(Path(record.base_dir) / ref)
        try:
            return load_prompt_embeds(path), path
        except InvalidInput as exc:
            raise record.error(exc.message, "prompt_embeds") from None

    def get(self, record: Record, prompt: str, negative: str = "", use_embeds: bool = True) -> Conditioning:
        embeds, key = self.embeds(record) if use_embeds else (None, None)
        cache_key = (prompt, negative, key if embeds is not None and key else ("default" if embeds else None))
        if cache_key not in self._cache:
            try:
                self._cache[cache_key] = conditioning(self.ldm.text, prompt, negative, embeds=embeds,
                                                      cross_attention_dim=self.ldm.cross_attention_dim,
                                                      model_dir=self.ldm.model_dir)
            except InvalidInput as exc:
                raise record.error(exc.message, exc.field) from None
        return self._cache[cache_key]

    def attack(self, record: Record, attack_prompt: str, from_record: bool) -> Conditioning:
        """The diffusion attack's conditioning: the record's prompt, or ``--attack-prompt`` (default "")."""
        if from_record:
            return self.get(record, str(record.data.get("prompt", "")))
        embeds, _ = self.embeds(record)
        if self.ldm.text is None and embeds is not None:
            if attack_prompt:
                raise record.error(f"--attack-prompt {attack_prompt!r} needs a text encoder; with precomputed "
                                   "embeddings use --attack-prompt-from-record or the empty prompt", "prompt_embeds")
            if "negative_prompt_embeds" not in embeds:
                raise record.error("the empty attack prompt needs negative_prompt_embeds (the embedding of \"\") "
                                   "in the prompt embeddings file", "prompt_embeds")
            empty, pooled = embeds["negative_prompt_embeds"], embeds.get("negative_pooled_prompt_embeds")  # (SDXL)
            return Conditioning(empty, empty, pooled, pooled)
        return self.get(record, attack_prompt, "", use_embeds=False)


def record_seed(record: Record, default: int) -> int:
    """The record's ``seed`` field, else ``default`` (the run's seed)."""
    seed = record.data.get("seed", default)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise record.error(f"expected an integer seed, got {seed!r}", "seed")
    return seed


def output_base(record: Record) -> dict[str, Any]:
    """The record's fields, with image/mask paths rebased so they resolve from the working directory."""
    return rebase_refs(record.data, Path(record.base_dir), Path.cwd())
