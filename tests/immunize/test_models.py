"""Model directories, text conditioning and the tiny model (spec §3, §4 properties 10–11)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import (
    EditConfig,
    HashTextEncoder,
    PGDConfig,
    Request,
    conditioning,
    configured_mode,
    edit_image,
    immunize,
    load_ldm,
    load_prompt_embeds,
    model_fingerprint,
    resolve_mode,
    tiny_components,
)
from confidently.immunize.attacks import DiffusionAttack
from confidently.immunize.models import parse_dtype
from safetensors.torch import save_file

from tests.immunize.conftest import blobs, centre_mask


def test_the_sd15_scale_has_stable_diffusion_15s_parameter_counts():
    """`tiny-model --scale sd15` sizes a GPU for a real attack: the published SD 1.5 UNet (859,520,964
    parameters as img2img) and VAE (83,653,863). Built on the meta device: shapes only, no memory."""
    from confidently.immunize import models

    with torch.device("meta"):
        vae, unet, _, text = tiny_components(512, "img2img", scale="sd15")
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert unet.config.cross_attention_dim == text.config["dim"] == 768 and text.config["max_length"] == 77
    with pytest.raises(UsageError, match="multiple of 64"):
        models.write_tiny_model("unused", size=96, scale="sd15")
    with pytest.raises(UsageError, match="tiny or sd15"):
        tiny_components(32, scale="sdxl")


def test_tiny_model_round_trip_matches_the_in_memory_model(ldm, tiny_dir):
    """Property 10: tiny-model → load → the same outputs as the components built in memory."""
    vae, unet, scheduler, text = tiny_components(32, "inpaint", seed=0)
    x = blobs(1) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vae.encode(x).latent_dist.mean, ldm.vae.encode(x).latent_dist.mean)
        sample, hidden = torch.randn(2, 9, 16, 16), torch.randn(2, 8, 16)
        assert torch.equal(unet(sample, 10, encoder_hidden_states=hidden).sample,
                           ldm.unet(sample, 10, encoder_hidden_states=hidden).sample)
    assert torch.equal(text.encode(["a red car"]), ldm.text.encode(["a red car"]))
    assert ldm.new_scheduler().config.beta_schedule == scheduler.config.beta_schedule == "scaled_linear"
    assert type(ldm.new_scheduler()).__name__ == "DDIMScheduler"
    assert ldm.downsampling == 2 and ldm.mode == "inpaint" and configured_mode(tiny_dir) == "inpaint"
    assert len(model_fingerprint(tiny_dir)) == 64


def test_mode_and_downsampling_come_from_the_configs(ldm_img2img, tmp_path, tiny_img2img_dir):
    assert ldm_img2img.mode == "img2img" and resolve_mode(ldm_img2img, "auto") == "img2img"
    with pytest.raises(UsageError, match="in_channels=4"):
        resolve_mode(ldm_img2img, "inpaint")
    # a VAE with three blocks downsamples by 4: read from the config, never assumed
    copy = shutil.copytree(tiny_img2img_dir, tmp_path / "model")
    config = json.loads((copy / "vae" / "config.json").read_text())
    assert config["block_out_channels"] == [8, 16]
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8).save_pretrained(str(copy / "vae"))
    assert load_ldm(copy, parts=("vae",)).downsampling == 4


@pytest.mark.parametrize("missing,parts", [("vae", ("vae",)), ("unet", ("vae", "unet")),
                                           ("scheduler", ("vae", "unet", "scheduler"))])
def test_missing_component_is_named(tiny_dir, tmp_path, missing, parts):
    """Property 11: a directory lacking a component fails with a message naming it (no network call)."""
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    shutil.rmtree(copy / missing)
    with pytest.raises(InvalidInput, match=f"lacks {missing}/"):
        load_ldm(copy, parts=parts)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_ldm(tmp_path / "nowhere")


def test_without_text_encoder_or_embeddings_the_error_names_the_options(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    shutil.rmtree(copy / "toy_text")
    ldm = load_ldm(copy)
    assert ldm.text is None
    with pytest.raises(InvalidInput, match="prompt embeddings") as error:
        conditioning(ldm.text, "a red car", "")
    assert "transformers" in str(error.value) and "--prompt-embeds" in str(error.value)
    # (a) precomputed embeddings make the edit work without any text encoder
    path = tmp_path / "embeds.safetensors"
    save_file({"prompt_embeds": torch.randn(1, 8, 16), "negative_prompt_embeds": torch.zeros(1, 8, 16)}, str(path))
    cond = conditioning(None, "ignored", "", embeds=load_prompt_embeds(path), cross_attention_dim=16)
    out = edit_image(ldm, blobs(1)[0], cond, EditConfig("inpaint", steps=2), seed=0, mask=centre_mask()[0])
    assert out.shape == (3, 32, 32)
    with pytest.raises(InvalidInput, match="cross_attention_dim"):
        conditioning(None, "", "", embeds=load_prompt_embeds(path), cross_attention_dim=768)
    save_file({"prompt_embeds": torch.randn(1, 8, 16)}, str(path))
    with pytest.raises(InvalidInput, match="negative_prompt_embeds"):
        conditioning(None, "", "", embeds=load_prompt_embeds(path))


def test_hash_text_encoder_is_stable_and_distinguishes_prompts(tmp_path):
    encoder = HashTextEncoder(vocab_size=64, max_length=4, dim=8, seed=3)
    ids = encoder.token_ids(["a red car", "", "one two three four five"])
    assert ids.shape == (3, 4) and int(ids[1].abs().sum()) == 0 and int(ids.max()) < 64
    encoder.save(tmp_path / "toy")
    again = HashTextEncoder.load(tmp_path / "toy")
    assert torch.equal(encoder.encode(["a red car"]), again.encode(["a red car"]))
    assert not torch.equal(again.encode(["a red car"]), again.encode(["a blue car"]))


def test_clip_text_encoder_from_a_local_directory(tiny_dir, tmp_path):
    """(b) CLIP classes from transformers, tiny config, local files only."""
    transformers = pytest.importorskip("transformers")
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    shutil.rmtree(copy / "toy_text")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for letter in "abcdefghijklmnopqrstuvwxyz":
            vocab[letter + suffix] = len(vocab)
    (copy / "tokenizer").mkdir()
    (copy / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (copy / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(copy / "tokenizer" / "vocab.json"),
                                           str(copy / "tokenizer" / "merges.txt"), model_max_length=8)
    tokenizer.save_pretrained(str(copy / "tokenizer"))
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    transformers.CLIPTextModel(config).save_pretrained(str(copy / "text_encoder"))
    ldm = load_ldm(copy)
    assert type(ldm.text).__name__ == "ClipText"
    cond = conditioning(ldm.text, "a red car", "", cross_attention_dim=ldm.cross_attention_dim)
    assert cond.cond.shape == (1, 8, 16) and not torch.equal(cond.cond, cond.uncond)
    out = edit_image(ldm, blobs(1)[0], cond, EditConfig("inpaint", steps=2), seed=0, mask=centre_mask()[0])
    assert out.shape == (3, 32, 32)


WEIGHTS = "diffusion_pytorch_model.safetensors"


def rewrite_weights(component_dir, change) -> str:
    """Apply ``change`` to a component's state dict in place; returns the key it touched."""
    from safetensors.torch import load_file

    state = load_file(component_dir / WEIGHTS)
    key = sorted(state)[len(state) // 2]
    change(state, key)
    save_file(state, component_dir / WEIGHTS)
    return key


def pickle_component(component_dir) -> None:
    """Store a component as diffusers' legacy pickled diffusion_pytorch_model.bin instead of safetensors."""
    from safetensors.torch import load_file

    torch.save(load_file(component_dir / WEIGHTS), component_dir / "diffusion_pytorch_model.bin")
    (component_dir / WEIGHTS).unlink()


def test_weights_missing_a_key_are_refused_not_left_random(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    key = rewrite_weights(copy / "vae", lambda state, key: state.pop(key))
    with pytest.raises(InvalidInput, match=rf"vae: its weights do not match its config.json \(missing \['{key}'\]"):
        load_ldm(copy, parts=("vae",))


def test_renamed_or_reshaped_weights_are_refused(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    key = rewrite_weights(copy / "unet", lambda state, key: state.update({f"{key}_renamed": state.pop(key)}))
    with pytest.raises(InvalidInput, match=rf"unet: .*missing \['{key}'\], unexpected \['{key}_renamed'\]"):
        load_ldm(copy)
    fresh = shutil.copytree(tiny_dir, tmp_path / "reshaped")
    key = rewrite_weights(fresh / "unet", lambda state, key: state.update({key: torch.zeros(1)}))
    with pytest.raises(InvalidInput, match=f"unet: its weights do not match its config.json .*size mismatch for {key}"):
        load_ldm(fresh)


def test_a_pickled_component_loads_only_when_trusted(tiny_dir, tmp_path, monkeypatch):
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    pickle_component(copy / "unet")
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without --trust-pickle"))
    with pytest.raises(InvalidInput, match=r"unet/diffusion_pytorch_model\.bin is a pickle.*--trust-pickle"):
        load_ldm(copy)
    monkeypatch.setattr(torch, "load", real_load)
    trusted = load_ldm(copy, trust_pickle=True)
    reference = load_ldm(tiny_dir)
    assert all(torch.equal(a, b) for a, b in zip(trusted.unet.state_dict().values(),
                                                 reference.unet.state_dict().values(), strict=True))


def test_a_pickled_text_encoder_is_refused_before_transformers_loads_it(tiny_dir, tmp_path):
    copy = shutil.copytree(tiny_dir, tmp_path / "model")
    (copy / "text_encoder").mkdir()
    torch.save({"w": torch.zeros(1)}, copy / "text_encoder" / "pytorch_model.bin")
    with pytest.raises(InvalidInput, match=r"text_encoder/pytorch_model\.bin is a pickle"):
        load_ldm(copy)


def test_cli_exits_3_on_mismatched_or_pickled_components(tiny_dir, tmp_path, run_tool):
    broken = shutil.copytree(tiny_dir, tmp_path / "broken")
    key = rewrite_weights(broken / "vae", lambda state, key: state.pop(key))
    result = run_tool("immunize", "random", "-", "--model-dir", broken, "--out-dir", tmp_path / "out")
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "vae" in result.stderr and key in result.stderr
    pickled = shutil.copytree(tiny_dir, tmp_path / "pickled")
    pickle_component(pickled / "unet")
    refused = run_tool("immunize", "edit", "-", "--model-dir", pickled, "--out-dir", tmp_path / "edits")
    assert refused.returncode == 3 and "diffusion_pytorch_model.bin is a pickle" in refused.stderr
    trusted = run_tool("immunize", "edit", "-", "--model-dir", pickled, "--out-dir", tmp_path / "edits",
                       "--trust-pickle")
    assert trusted.returncode == 0, trusted.stderr


def test_weights_are_held_in_the_dtype_and_pixels_stay_fp32(tiny_dir, ldm):
    """`--dtype fp16|bf16` on CUDA holds the VAE, UNet and text encoder weights in that dtype (load_ldm's
    weights_dtype defaults to the compute dtype: fp16 there, fp32 on a CPU). Forced on the CPU, bf16 weights compute
    in bf16 while the latents and images that come out are fp32, close to the fp32 weights' ones."""
    on_cpu = load_ldm(tiny_dir, "cpu", "fp16")
    assert on_cpu.dtype == on_cpu.weights_dtype == on_cpu.unet.dtype == torch.float32  # a CPU computes in fp32
    assert parse_dtype("fp16", torch.device("cuda")) == torch.float16  # what load_ldm holds the weights in on CUDA
    half = load_ldm(tiny_dir, weights_dtype="bf16")
    assert half.vae.dtype == half.unet.dtype == half.text.tokens.weight.dtype == half.weights_dtype == torch.bfloat16
    x = blobs(1) * 2 - 1
    z, reference = half.encode_mean(x), ldm.encode_mean(x)
    image = half.decode(z * half.scaling_factor)
    assert z.dtype == image.dtype == torch.float32
    assert float((z - reference).abs().max()) < 0.05 * float(reference.abs().max())
    expected = ldm.decode(reference * ldm.scaling_factor)
    error, scale = (image - expected).abs(), float(expected.abs().max())  # the random decoder's range is ±3
    assert float(error.mean()) < 0.01 * scale and float(error.max()) < 0.1 * scale
    with pytest.raises(UsageError, match="--dtype 'fp8'"):
        load_ldm(tiny_dir, weights_dtype="fp8")


def test_fp16_weights_keep_the_loss_scale_and_fp32_pixel_gradients(tiny_img2img_dir, ldm_img2img, monkeypatch):
    """fp16 weights underflow small gradients as fp16 autocast does: the loss is scaled (and unscaled) in PGD;
    the gradient that reaches the pixels is fp32."""
    from confidently.immunize import attacks

    half = load_ldm(tiny_img2img_dir, weights_dtype="fp16")
    scales, real = [], attacks.pgd
    monkeypatch.setattr(attacks, "pgd", lambda *a, **k: scales.append(k["loss_scale"]) or real(*a, **k))
    x = blobs(1, seed=1)
    for model, scale in ((half, 1024.0), (ldm_img2img, 1.0)):
        result = immunize(model, Request(x, key="a"), "encoder", PGDConfig(steps=3))
        assert scales.pop() == scale
        assert result.x_adv.dtype == torch.float32 and result.loss_final < result.loss_init
    request = Request(x.clone().requires_grad_(True), key="a", cond=conditioning(half.text, "a dog", ""),
                      edit=EditConfig("img2img", steps=2), noise="fixed")
    DiffusionAttack().objective(half, request)(request.x).backward()
    assert request.x.grad.dtype == torch.float32 and bool(torch.isfinite(request.x.grad).all())
    assert float(request.x.grad.abs().sum()) > 0
