"""Stable Diffusion 2.x directories: v-prediction (SD 2.1 at 768), upcast attention, heads listed per block.

The tiny SD-2-shaped model (`immunize tiny-model --family sd2`) has SD 2.1's config keys with tiny sizes; the own
loop (what the diffusion attack differentiates) and diffusers' pipelines must make the same edit on it, and both
attacks must run on it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from confidently.errors import UsageError
from confidently.immunize import (
    EditConfig,
    PGDConfig,
    Request,
    conditioning,
    edit_image,
    immunize,
    load_ldm,
    tiny_components,
    write_tiny_model,
)
from confidently.immunize.models import random_family
from safetensors.torch import save_file

from tests.immunize.conftest import blobs, centre_mask
from tests.immunize.ldm_layout import ldm_checkpoint
from tests.immunize.test_pipelines import TOLERANCE, both_backends


@pytest.fixture(scope="module")
def sd2(tmp_path_factory):
    """The tiny SD-2-shaped models, inpaint and img2img, loaded on the CPU in fp32."""
    root = tmp_path_factory.mktemp("sd2")
    return {unet: load_ldm(write_tiny_model(root / unet, size=32, unet=unet, family="sd2"))
            for unet in ("inpaint", "img2img")}


def test_tiny_model_family_sd2_writes_sd21s_config_keys(tmp_path, run_tool):
    done = run_tool("immunize", "tiny-model", "--out", tmp_path / "sd2", "--unet", "img2img", "--family", "sd2")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["family"], record["prediction"]) == ("sd2", "v")
    scheduler = json.loads((tmp_path / "sd2" / "scheduler" / "scheduler_config.json").read_text())
    unet = json.loads((tmp_path / "sd2" / "unet" / "config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["_class_name"] == "DDIMScheduler"
    assert unet["upcast_attention"] is True and unet["use_linear_projection"] is True
    assert unet["attention_head_dim"] == [2, 4]  # a list, as SD 2's [5, 10, 20, 20]: 8-channel heads here
    refused = run_tool("immunize", "tiny-model", "--out", tmp_path / "refused", "--scale", "sd15", "--family", "sd2")
    assert refused.returncode == 2 and "the sd15 scale is sd15" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused").exists()  # refused before the folder is claimed
    # SD 2-inpainting and 2-base predict epsilon; the default family stays SD 1.5's
    assert random_family("tiny", "sd2", "epsilon") == ("sd2", "epsilon")
    assert random_family("tiny") == ("sd15", "epsilon") and random_family("sd2") == ("sd2", "v")
    with pytest.raises(UsageError, match="choose epsilon or v"):
        random_family("tiny", prediction="x0")


@pytest.mark.parametrize("unet", ["inpaint", "img2img"])
@pytest.mark.parametrize("strength,eta", [(None, 1.0), (0.75, 0.0)])
def test_pipeline_and_own_loop_make_the_same_v_prediction_edit(sd2, unet, strength, eta):
    """DDIMScheduler.step converts the UNet's v with the scheduler's alphas in both backends; the tolerance is
    test_pipelines.py's. Read as epsilon, the same UNet output gives another edit: the check could fail."""
    model = sd2[unet]
    assert model.new_scheduler().config.prediction_type == "v_prediction"
    x, mask = blobs(1, seed=4)[0], centre_mask()[0]
    cond = conditioning(model.text, "a red car", "")
    config = EditConfig(unet, steps=6, guidance=7.5, eta=eta, strength=strength)
    own, pipe = both_backends(model, x, cond, config, mask)
    assert float((own - pipe).abs().max()) <= TOLERANCE
    as_epsilon = replace(model, scheduler_config={**model.scheduler_config, "prediction_type": "epsilon"},
                         pipelines={})
    wrong = edit_image(as_epsilon, x, cond, config, seed=11, mask=mask, paste=False, backend="own")
    assert float((wrong - own).abs().max()) > 100 * TOLERANCE


@pytest.mark.parametrize("unet", ["inpaint", "img2img"])
def test_both_attacks_run_on_the_v_prediction_model(sd2, unet):
    model = sd2[unet]
    x = blobs(1, seed=2)
    mask = centre_mask() if unet == "inpaint" else None
    cond = conditioning(model.text, "a photo", "")
    config = PGDConfig(eps=16 / 255, step=2 / 255, steps=4)
    for method, extra in (("encoder", {}),
                          ("diffusion", {"cond": cond, "edit": EditConfig(unet, steps=4), "noise": "fixed"})):
        result = immunize(model, Request(x, mask, unet, key="p", **extra), method, config)
        assert result.loss_final < result.loss_init, method
        assert float((result.x_adv - x).abs().max()) <= 16 / 255 + 1e-6
        if mask is not None:  # the regenerated region is not perturbed
            assert torch.equal(result.x_adv * mask, x * mask)


def test_the_sd2_scale_has_stable_diffusion_2s_parameter_counts():
    """`tiny-model --scale sd2`: SD 2's published UNet (865,910,724 parameters), SD 1.5's VAE, 77 × 1024 text
    states (OpenCLIP ViT-H). Built on the meta device: shapes only."""
    with torch.device("meta"):
        vae, unet, scheduler, text = tiny_components(512, "img2img", scale="sd2")
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert tuple(unet.config.attention_head_dim) == (5, 10, 20, 20) and unet.config.upcast_attention
    assert unet.config.cross_attention_dim == text.config["dim"] == 1024 and text.config["max_length"] == 77
    assert scheduler.config.prediction_type == "v_prediction"


def test_an_sd2_single_file_checkpoint_loads_in_bf16(sd2, tmp_path):
    """SD 2's linear attention projections in the original layout, held in bf16 as --dtype bf16 holds them on CUDA."""
    model = sd2["img2img"]
    path = tmp_path / "sd2.safetensors"
    save_file(ldm_checkpoint(model.vae, model.unet), str(path))
    configs = shutil.copytree(model.model_dir, tmp_path / "configs",
                              ignore=shutil.ignore_patterns("diffusion_pytorch_model*.safetensors"))
    loaded = load_ldm(path, config_dir=configs, weights_dtype="bf16")
    assert loaded.unet.dtype == loaded.vae.dtype == torch.bfloat16
    for ours, theirs in zip(loaded.unet.state_dict().values(), model.unet.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs.to(torch.bfloat16))


def test_sd2_prompt_embeddings_are_the_pipelines(sd2, tmp_path):
    """SD 2's OpenCLIP ViT-H text tower is saved as a CLIPTextModel whose config keeps 23 of its 24 layers (the
    penultimate states SD 2 reads) and whose tokenizer pads with "!": our CLIP conditioning reads the saved config
    and tokenizer as diffusers' ``encode_prompt`` does, so both give the same embeddings (a 1-layer tower here)."""
    transformers = pytest.importorskip("transformers")
    from diffusers import StableDiffusionImg2ImgPipeline

    folder = shutil.copytree(sd2["img2img"].model_dir, tmp_path / "sd2-clip")
    shutil.rmtree(folder / "toy_text")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter + "</w>"] = len(vocab)
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(folder / "tokenizer" / "vocab.json"), str(folder / "tokenizer" / "merges.txt"),
                               pad_token="!", model_max_length=8).save_pretrained(str(folder / "tokenizer"))
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                                         hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=2)
    transformers.CLIPTextModel(config).save_pretrained(str(folder / "text_encoder"))
    model = load_ldm(folder)
    cond = conditioning(model.text, "a red car", "", cross_attention_dim=model.cross_attention_dim)
    pipe = StableDiffusionImg2ImgPipeline(vae=model.vae, text_encoder=model.text.model, tokenizer=model.text.tokenizer,
                                          unet=model.unet, scheduler=model.new_scheduler(), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    embeds, negative = pipe.encode_prompt("a red car", "cpu", 1, True, "")
    assert torch.equal(cond.cond, embeds) and torch.equal(cond.uncond, negative)
    assert not torch.equal(cond.cond, cond.uncond)
