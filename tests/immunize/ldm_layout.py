"""Diffusers VAE/UNet state dicts → the original LDM (CompVis) key layout of a single-file SD checkpoint.

The inverse of diffusers' ``convert_ldm_{vae,unet}_checkpoint`` tables (after diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py), generalised from SD's 4 levels × 2 layers to any
level count and ``layers_per_block``, so the tiny test model can be written the way a downloaded
``.safetensors`` checkpoint is laid out.
"""

from __future__ import annotations

from typing import Any

import torch

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
UNET_FIXED = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
              "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _rename(key: str, prefixes: dict[str, str]) -> str:
    for new, old in prefixes.items():
        if key.startswith(new):
            return old + key[len(new):]
    return key


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict in LDM's input_blocks/middle_block/output_blocks layout."""
    layers, levels = int(config["layers_per_block"]), len(config["block_out_channels"])
    prefixes = dict(UNET_FIXED)
    for i in range(levels):
        for j in range(layers):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(layers + 1) * i + j + 1}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(layers + 1) * i + j + 1}.1."
        prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(layers + 1) * (i + 1)}.0.op."
        up_attends = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(layers + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(layers + 1) * i + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(layers + 1) * i + j}.1."
        upsampler = f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attends else 1}."
        prefixes[f"up_blocks.{i}.upsamplers.0."] = upsampler
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    for j in range(2):
        prefixes[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    out = {}
    for key, value in state.items():
        renamed = _rename(key, prefixes)
        if ".resnets." in key:
            head, _, part = renamed.rpartition(".")  # e.g. input_blocks.1.0.norm1 . weight
            block, _, layer = head.rpartition(".")
            renamed = f"{block}.{UNET_RESNET.get(layer, layer)}.{part}"
        out[UNET_PREFIX + renamed] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in LDM's encoder.down/decoder.up layout (attention as 1×1 convs)."""
    levels, layers = len(config["block_out_channels"]), int(config["layers_per_block"])
    prefixes = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for part in ("encoder", "decoder"):
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}."] = f"{part}.mid.block_{j + 1}."
    for i in range(levels):
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{levels - 1 - i}.block.{j}."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{levels - 1 - i}.upsample."
    out = {}
    for key, value in state.items():
        key = _rename(key, prefixes).replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in key:
            head, tail = key.split(".mid.attn_1.")
            key = f"{head}.mid.attn_1.{_rename(tail, VAE_ATTENTION)}"
            if value.ndim == 2:  # LDM's attention projections are 1×1 convolutions
                value = value[:, :, None, None]
        out[VAE_PREFIX + key] = value
    return out


def ldm_checkpoint(vae, unet) -> dict[str, torch.Tensor]:
    """One flat state dict as a downloaded SD ``.safetensors`` holds it (contiguous copies, safe to save)."""
    state = {**vae_to_ldm(vae.state_dict(), vae.config), **unet_to_ldm(unet.state_dict(), unet.config)}
    return {key: value.detach().clone().contiguous() for key, value in state.items()}
