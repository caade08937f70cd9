"""Prompt–image CLIP similarity of edits (thesis ch. 4, Fig. 4.6).

The thesis embeds each edit and the prompt that guided it with a pretrained CLIP and reports their cosine
similarity, with and without immunization: an immunized photo whose edit ignores the prompt scores lower.
:class:`ClipSimilarity` does that from a local directory saved by ``transformers``' ``save_pretrained``
(``CLIPModel`` weights + ``CLIPProcessor``: tokenizer and image processor), never the network;
:func:`write_tiny_clip` writes a random tiny one (with a minimal byte-level BPE vocabulary) for tests and
laptops. ``transformers`` is imported inside the functions: it is an optional extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from confidently.errors import InvalidInput, MissingBackend, UsageError

INSTALL = "pip install transformers"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingBackend(f"--clip needs transformers' CLIPModel: {INSTALL} (or leave out --clip)") from None
    transformers.utils.logging.disable_progress_bar()  # stderr is for the tool's own messages
    return transformers


class ClipSimilarity:
    """Cosine similarity between CLIP image embeddings of images in [0, 1] and text embeddings of prompts.

    ``model_dir`` holds ``config.json``, the weights (``model.safetensors``; pickled ``.bin`` weights only
    with ``trust_pickle``) and the processor files (``vocab.json``, ``merges.txt``,
    ``preprocessor_config.json``...), e.g. a downloaded ``openai/clip-vit-large-patch14``.
    """

    def __init__(self, model_dir: str | Path, device: torch.device | str = "cpu", *, trust_pickle: bool = False):
        transformers = _transformers()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise UsageError(f"--clip {path}: not a CLIP directory (no config.json); expected what "
                             "CLIPModel.save_pretrained writes, or `immunize tiny-clip --out DIR`")
        if not trust_pickle and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
            raise InvalidInput(f"--clip {path}: the weights are a pickle (.bin), which can run code; convert them "
                               "to safetensors or pass --trust-pickle for files you trust")
        try:
            self.model = transformers.CLIPModel.from_pretrained(str(path), local_files_only=True,
                                                                use_safetensors=not trust_pickle or None)
            self.processor = transformers.CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--clip {path}: cannot load CLIPModel + CLIPProcessor "
                               f"({str(exc).splitlines()[0][:300]})") from None
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        self.name = path.name
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _features(output) -> torch.Tensor:
        # transformers 4 returns the projected embeddings; 5 may wrap them in a model output
        if isinstance(output, torch.Tensor):
            return output
        return output.pooler_output if getattr(output, "pooler_output", None) is not None else output[0]

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unit-norm CLIP embeddings of C×H×W images in [0, 1] (8-bit, as the edits are saved)."""
        arrays = [(image.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
                  for image in images]
        pixels = self.processor(images=arrays, return_tensors="pt")["pixel_values"].to(self.device)
        features = self._features(self.model.get_image_features(pixel_values=pixels)).float()
        return torch.nn.functional.normalize(features, dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm CLIP embeddings of the prompts (truncated to the text model's length)."""
        tokens = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True,
                                max_length=self.max_length)
        inputs = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        features = self._features(self.model.get_text_features(**inputs)).float()
        return torch.nn.functional.normalize(features, dim=-1)

    def similarity(self, images: Sequence[torch.Tensor], prompts: Sequence[str]) -> list[float]:
        """cos(image i, prompt i) for each pair (the thesis's Fig. 4.6 measure; in [-1, 1])."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        unique = list(dict.fromkeys(prompts))
        texts = self.text_embeddings(unique)
        rows = texts[[unique.index(p) for p in prompts]]
        return [float(v) for v in (self.image_embeddings(images) * rows).sum(-1).cpu()]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte → printable character table (the alphabet of byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


TINY_MERGES = ("t h", "th e</w>", "a n", "o n", "i n", "e r", "o r", "a r", "p h", "o t", "h o", "c a")


def write_tiny_tokenizer(out: str | Path, *, save: bool = True, **options):
    """A minimal byte-level BPE ``CLIPTokenizer`` (every byte, alone and word-final, and a dozen merges) over
    ``out/vocab.json`` + ``merges.txt``; ``options`` go to its constructor (``pad_token``, ``model_max_length``),
    and with ``save`` it is saved there with ``save_pretrained`` (a diffusers ``tokenizer/`` folder)."""
    transformers = _transformers()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet)]
    for merge in TINY_MERGES:
        tokens.append(merge.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), **options)
    if save:
        tokenizer.save_pretrained(str(out))
    return tokenizer


def write_tiny_clip(out: str | Path, *, size: int = 32, seed: int = 0) -> Path:
    """A random tiny CLIP (2-layer 32-d text and vision towers, ``size``-pixel images) and a minimal
    byte-level BPE tokenizer (every byte, alone and word-final, and a dozen merges), saved with
    ``save_pretrained`` so :class:`ClipSimilarity` (and ``CLIPModel.from_pretrained``) load it offline."""
    transformers = _transformers()
    out = Path(out)
    tokenizer = write_tiny_tokenizer(out, save=False)
    vocab = tokenizer.get_vocab()
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": size},
                                                      crop_size={"height": size, "width": size})
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(out))
    text = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                                       bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                       pad_token_id=vocab["<|endoftext|>"])
    vision = transformers.CLIPVisionConfig(image_size=size, patch_size=max(1, size // 4), hidden_size=32,
                                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    transformers.CLIPModel(config).save_pretrained(str(out), safe_serialization=True)
    return out
