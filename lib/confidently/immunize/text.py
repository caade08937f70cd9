"""Text conditioning for the editing UNet: precomputed embeddings, CLIP, or the toy hash encoder.

Priority (spec §3): (a) prompt embeddings the user precomputed (a safetensors file with
``prompt_embeds`` [1|B, L, D] and optionally ``negative_prompt_embeds``; for SDXL also
``pooled_prompt_embeds`` and ``negative_pooled_prompt_embeds`` [1, P]), (b) CLIP from the model
directory's ``text_encoder/`` + ``tokenizer/`` through ``transformers`` (SDXL: both CLIPs, with
``text_encoder_2/`` + ``tokenizer_2/``, :class:`DualClipText`), (c) the toolbox's
:class:`HashTextEncoder` in ``toy_text/`` (tiny models and tests). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from confidently.errors import InvalidInput, MissingBackend

TOY_TEXT_DIR = "toy_text"
TOY_TEXT_WEIGHTS = "hash_text_encoder.safetensors"
POOLED_KEYS = ("pooled_prompt_embeds", "negative_pooled_prompt_embeds")
TEXT_OPTIONS = ("(a) precomputed prompt embeddings: --prompt-embeds FILE or a record field \"prompt_embeds\" "
                "(safetensors with prompt_embeds [1, L, D] and negative_prompt_embeds), or (b) a CLIP "
                "text_encoder/ + tokenizer/ in the model directory (needs `pip install transformers`)")


class TextEncoder(Protocol):
    """Anything that turns prompts into B×L×D embeddings for the UNet's cross-attention."""

    def encode(self, prompts: list[str]) -> torch.Tensor: ...


def token_id(word: str, vocab_size: int) -> int:
    """A stable token id in 1..vocab_size-1 (0 is padding): sha256, never Python's salted ``hash``."""
    return 1 + int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little") % (vocab_size - 1)


class HashTextEncoder(nn.Module):
    """Whitespace tokens → stable hash mod vocab → embedding + learned positions → LayerNorm.

    A stand-in for CLIP in tiny models: deterministic, offline, a few kB. Its output is
    B × max_length × dim, the shape a UNet's ``cross_attention_dim`` expects.
    """

    def __init__(self, vocab_size: int = 1024, max_length: int = 8, dim: int = 16, seed: int = 0):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "max_length": max_length, "dim": dim, "seed": seed}
        generator = torch.Generator().manual_seed(seed)
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Parameter(torch.zeros(max_length, dim))
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.tokens.weight.copy_(torch.randn(vocab_size, dim, generator=generator))
            self.positions.copy_(0.1 * torch.randn(max_length, dim, generator=generator))

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        vocab, length = self.config["vocab_size"], self.config["max_length"]
        rows = []
        for prompt in prompts:
            ids = [token_id(word, vocab) for word in prompt.lower().split()][:length]
            rows.append(ids + [0] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long, device=self.positions.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.tokens(ids) + self.positions)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(self.token_ids(prompts))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(folder / TOY_TEXT_WEIGHTS),
                  metadata={"format": "confidently.hash_text_encoder/1"})
        (folder / "config.json").write_text(json.dumps({"_class_name": "HashTextEncoder", **self.config}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> HashTextEncoder:
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            state = load_file(str(folder / TOY_TEXT_WEIGHTS))
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise InvalidInput(f"{folder}: not a readable hash text encoder ({exc})") from None
        encoder = cls(**{k: config[k] for k in ("vocab_size", "max_length", "dim", "seed")})
        encoder.load_state_dict(state)
        return encoder.eval().requires_grad_(False)


class ClipText:
    """CLIPTokenizer + CLIPTextModel from a local diffusers directory (``transformers`` required)."""

    def __init__(self, model_dir: str | Path, device: torch.device, variant: str | None = None, model=None):
        """``model``: a CLIPTextModel loaded elsewhere (from a single-file checkpoint); only the tokenizer is read."""
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError:
            raise MissingBackend(f"{model_dir} has a CLIP text_encoder/, which needs `pip install transformers`; "
                                 f"or give precomputed prompt embeddings (--prompt-embeds)") from None
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(model_dir), subfolder="tokenizer",
                                                           local_files_only=True)
            self.model = model if model is not None else CLIPTextModel.from_pretrained(
                str(model_dir), subfolder="text_encoder", local_files_only=True, variant=variant,
                torch_dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{model_dir}: cannot load the CLIP text_encoder/ or tokenizer/ ({exc})") from None
        self.model.to(device).eval().requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.model(tokens.input_ids.to(self.device))[0]


def model_index(model_dir: str | Path) -> dict:
    """A diffusers directory's ``model_index.json`` (the pipeline class and its config flags), {} without one."""
    path = Path(model_dir) / "model_index.json"
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not readable JSON ({exc})") from None
    return index if isinstance(index, dict) else {}


class DualClipText:
    """SDXL's two text encoders (``text_encoder/`` CLIPTextModel + ``text_encoder_2/`` CLIPTextModelWithProjection,
    each with its tokenizer), encoding as ``StableDiffusionXL*Pipeline.encode_prompt`` does: the penultimate hidden
    states of both, concatenated, and the second one's projected pooled embedding.

    ``force_zeros_for_empty_prompt`` (``model_index.json``, True for SDXL base): an empty negative prompt is all
    zeros, as the pipelines make it when no negative prompt is given.
    """

    def __init__(self, model_dir: str | Path, device: torch.device, variant: str | None = None):
        try:
            from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
            from transformers.utils.logging import disable_progress_bar
        except ImportError:
            raise MissingBackend(f"{model_dir} is an SDXL directory (text_encoder/ and text_encoder_2/), which needs "
                                 "`pip install transformers`; or give precomputed prompt embeddings "
                                 "(--prompt-embeds)") from None
        disable_progress_bar()  # stderr is for the tool's own messages
        self.tokenizers, self.models = [], []
        for suffix, model_class in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
            try:
                self.tokenizers.append(CLIPTokenizer.from_pretrained(str(model_dir), subfolder=f"tokenizer{suffix}",
                                                                     local_files_only=True))
                self.models.append(model_class.from_pretrained(str(model_dir), subfolder=f"text_encoder{suffix}",
                                                               local_files_only=True, variant=variant,
                                                               torch_dtype=torch.float32))
            except (OSError, ValueError) as exc:
                raise InvalidInput(f"{model_dir}: cannot load the SDXL text_encoder{suffix}/ or tokenizer{suffix}/ "
                                   f"({exc})") from None
        for model in self.models:
            model.to(device).eval().requires_grad_(False)
        self.device = device
        self.force_zeros = bool(model_index(model_dir).get("force_zeros_for_empty_prompt", True))

    @torch.no_grad()
    def encode_pooled(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B×L×(D₁+D₂) prompt embeddings and B×P pooled embeddings."""
        hidden = []
        for tokenizer, model in zip(self.tokenizers, self.models, strict=True):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            output = model(ids.to(self.device), output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
        return torch.cat(hidden, dim=-1), output.text_embeds

    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.encode_pooled(prompts)[0]

    def conditioning(self, prompt: str, negative_prompt: str) -> Conditioning:
        """One prompt at a time, as the pipelines encode them (a batch of two would round differently)."""
        embeds, pooled = (t.float().cpu() for t in self.encode_pooled([prompt]))
        if not negative_prompt and self.force_zeros:
            return Conditioning(embeds, torch.zeros_like(embeds), pooled, torch.zeros_like(pooled))
        negative, negative_pooled = (t.float().cpu() for t in self.encode_pooled([negative_prompt]))
        return Conditioning(embeds, negative, pooled, negative_pooled)


def load_text_encoder(model_dir: str | Path, device: torch.device, variant: str | None = None) -> TextEncoder | None:
    """The text encoder a model directory ships (SDXL's two CLIPs, CLIP, then the toy hash encoder), or None."""
    model_dir = Path(model_dir)
    if (model_dir / "text_encoder_2" / "config.json").is_file():
        return DualClipText(model_dir, device, variant)
    if (model_dir / "text_encoder" / "config.json").is_file():
        return ClipText(model_dir, device, variant)
    if (model_dir / TOY_TEXT_DIR / "config.json").is_file():
        return HashTextEncoder.load(model_dir / TOY_TEXT_DIR).to(device)
    return None


@dataclass
class Conditioning:
    """What the UNet's cross-attention sees: the prompt's embedding and the unconditional one (CFG); for SDXL
    also the pooled text embeddings its ``added_cond_kwargs`` take (:mod:`.sdxl`)."""

    cond: torch.Tensor    # 1 × L × D
    uncond: torch.Tensor  # 1 × L × D
    pooled: torch.Tensor | None = None         # 1 × P, SDXL
    uncond_pooled: torch.Tensor | None = None  # 1 × P, SDXL

    def to(self, device: torch.device) -> Conditioning:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return Conditioning(self.cond.to(device), self.uncond.to(device), move(self.pooled),
                            move(self.uncond_pooled))

    def same(self, other: Conditioning) -> bool:
        """Equal tensors throughout (two records that can share a batch)."""
        def equal(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
            return a is b if a is None or b is None else torch.equal(a, b)

        return all(equal(getattr(self, name), getattr(other, name))
                   for name in ("cond", "uncond", "pooled", "uncond_pooled"))


def load_prompt_embeds(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"prompt embeddings file does not exist: {path}", field="prompt_embeds")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise InvalidInput(f"{path}: not a safetensors file ({exc})", field="prompt_embeds") from None
    if "prompt_embeds" not in tensors:
        raise InvalidInput(f"{path} has no 'prompt_embeds' tensor (it has: {', '.join(sorted(tensors))})",
                           field="prompt_embeds")
    for key, value in tensors.items():
        if key in ("prompt_embeds", "negative_prompt_embeds"):
            if value.ndim == 2:
                tensors[key] = value = value.unsqueeze(0)
            if value.ndim != 3 or value.shape[0] != 1:
                raise InvalidInput(f"{path}: '{key}' has shape {list(value.shape)}; expected 1×L×D",
                                   field="prompt_embeds")
        if key in POOLED_KEYS:
            if value.ndim == 1:
                tensors[key] = value = value.unsqueeze(0)
            if value.ndim != 2 or value.shape[0] != 1:
                raise InvalidInput(f"{path}: '{key}' has shape {list(value.shape)}; expected 1×P (SDXL's pooled "
                                   "text embedding)", field="prompt_embeds")
    return {k: v.float() for k, v in tensors.items()}


def conditioning(text: TextEncoder | None, prompt: str, negative_prompt: str = "", *,
                 embeds: dict[str, torch.Tensor] | None = None, cross_attention_dim: int | None = None,
                 model_dir: str | Path = "the model directory") -> Conditioning:
    """The (cond, uncond) embeddings for one prompt, from precomputed ``embeds`` or the text encoder.

    With precomputed embeddings, ``prompt_embeds`` is the prompt's embedding whatever ``prompt`` says,
    and ``negative_prompt_embeds`` (else the text encoder on ``negative_prompt``) is the unconditional one.
    """
    pooled = uncond_pooled = None
    if embeds is not None:
        cond, pooled = embeds["prompt_embeds"], embeds.get("pooled_prompt_embeds")
        if "negative_prompt_embeds" in embeds:
            uncond, uncond_pooled = embeds["negative_prompt_embeds"], embeds.get("negative_pooled_prompt_embeds")
        elif isinstance(text, DualClipText):
            negative = text.conditioning(negative_prompt, negative_prompt)
            uncond, uncond_pooled = negative.uncond, negative.uncond_pooled
        elif text is not None:
            uncond = text.encode([negative_prompt]).float().cpu()
        else:
            raise InvalidInput("precomputed prompt embeddings need 'negative_prompt_embeds' too (the embedding of "
                               "the negative/empty prompt) when the model directory has no text encoder",
                               field="prompt_embeds")
    elif isinstance(text, DualClipText):
        both = text.conditioning(prompt, negative_prompt)
        cond, uncond, pooled, uncond_pooled = both.cond, both.uncond, both.pooled, both.uncond_pooled
    elif text is not None:
        both = text.encode([prompt, negative_prompt]).float().cpu()
        cond, uncond = both[:1], both[1:]
    else:
        raise InvalidInput(f"{model_dir} has no text encoder (text_encoder/ or toy_text/) and no prompt embeddings "
                           f"were given; use {TEXT_OPTIONS}")
    if cond.shape != uncond.shape:
        raise InvalidInput(f"prompt and negative prompt embeddings differ in shape: {list(cond.shape)} vs "
                           f"{list(uncond.shape)}", field="prompt_embeds")
    if cross_attention_dim is not None and cond.shape[-1] != cross_attention_dim:
        raise InvalidInput(f"prompt embeddings have width {cond.shape[-1]} but the UNet's cross_attention_dim is "
                           f"{cross_attention_dim}", field="prompt_embeds")
    if (pooled is None) != (uncond_pooled is None) or (pooled is not None and pooled.shape != uncond_pooled.shape):
        raise InvalidInput("pooled_prompt_embeds and negative_pooled_prompt_embeds (SDXL) go together, with one "
                           "shape", field="prompt_embeds")
    return Conditioning(cond, uncond, pooled, uncond_pooled)
