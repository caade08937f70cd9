"""Single-file checkpoints (`--model-dir FILE.safetensors --config-dir DIR`): the tiny model written in the original
LDM key layout loads through diffusers' ``from_single_file`` to exactly the directory's weights, and the CLI gives
the same immunization and edit from it; pickles, a missing --config-dir and another architecture are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.immunize import load_ldm
from confidently.immunize.models import model_fingerprint
from confidently.io.images import load_image, save_image
from safetensors.torch import save_file

from tests.immunize.conftest import blobs, centre_mask
from tests.immunize.ldm_layout import UNET_PREFIX, VAE_PREFIX, ldm_checkpoint


def configs_only(model_dir, out):
    """``model_dir`` without its VAE/UNet weights: what --config-dir needs."""
    copy = shutil.copytree(model_dir, out)
    for part in ("vae", "unet"):
        for weights in (copy / part).glob("*.safetensors"):
            weights.unlink()
    return copy


@pytest.fixture(scope="module")
def single_file(tiny_dir, tmp_path_factory):
    """(checkpoint.safetensors, its config dir) for the tiny inpainting model."""
    root = tmp_path_factory.mktemp("single-file")
    reference = load_ldm(tiny_dir, parts=("vae", "unet"))
    path = root / "tiny-inpaint.safetensors"
    save_file(ldm_checkpoint(reference.vae, reference.unet), str(path))
    return path, configs_only(tiny_dir, root / "configs")


def test_the_checkpoint_is_in_the_original_layout_and_loads_to_the_directorys_weights(tiny_dir, single_file):
    path, config_dir = single_file
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        keys = set(handle.keys())
    assert all(key.startswith((UNET_PREFIX, VAE_PREFIX)) for key in keys)
    assert f"{UNET_PREFIX}input_blocks.0.0.weight" in keys and f"{VAE_PREFIX}encoder.mid.attn_1.q.weight" in keys
    loaded, reference = load_ldm(path, config_dir=config_dir), load_ldm(tiny_dir)
    assert loaded.weights == path and loaded.model_dir == config_dir and loaded.mode == "inpaint"
    for part in ("vae", "unet"):
        got, want = getattr(loaded, part).state_dict(), getattr(reference, part).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[key], want[key]) for key in want), part
    assert type(loaded.text).__name__ == "HashTextEncoder"  # the tiny model's text encoder stays in the configs
    assert loaded.fingerprint() == model_fingerprint(path) != reference.fingerprint()


def test_sd_clip_text_encoder_comes_from_the_file(tiny_dir, single_file, tmp_path):
    """A real SD file also holds CLIP (cond_stage_model.transformer.*); the folder gives its config and tokenizer."""
    transformers = pytest.importorskip("transformers")
    path, config_dir = single_file
    configs = shutil.copytree(config_dir, tmp_path / "configs")
    shutil.rmtree(configs / "toy_text")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate("abcdefghij")}}
    (configs / "tokenizer").mkdir()
    (configs / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (configs / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(str(configs / "tokenizer" / "vocab.json"), str(configs / "tokenizer" / "merges.txt"),
                               model_max_length=8).save_pretrained(str(configs / "tokenizer"))
    torch.manual_seed(0)
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    clip.config.save_pretrained(str(configs / "text_encoder"))  # config only: the weights are in the file
    from safetensors.torch import load_file

    state = {key if key.startswith("text_model.") else f"text_model.{key}": value
             for key, value in clip.state_dict().items()}
    full = {**load_file(str(path)), **{f"cond_stage_model.transformer.{k}": v.contiguous() for k, v in state.items()}}
    save_file(full, str(tmp_path / "sd.safetensors"))
    loaded = load_ldm(tmp_path / "sd.safetensors", config_dir=configs)
    assert type(loaded.text).__name__ == "ClipText"
    got = loaded.text.model.state_dict()
    assert all(torch.equal(got[key], value) for key, value in clip.state_dict().items())
    broken = {k: v for k, v in full.items() if not k.endswith("final_layer_norm.weight")}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(InvalidInput, match="text encoder weights do not match.*random weights"):
        load_ldm(tmp_path / "broken.safetensors", config_dir=configs)


def test_refusals(single_file, tiny_img2img_dir, tmp_path, monkeypatch):
    path, config_dir = single_file
    with pytest.raises(UsageError, match="single-file checkpoint: also pass --config-dir DIR"):
        load_ldm(path)
    with pytest.raises(UsageError, match="--config-dir goes with a single-file checkpoint"):
        load_ldm(config_dir, config_dir=config_dir)
    with pytest.raises(UsageError, match="--variant fp16 picks files in a model directory"):
        load_ldm(path, config_dir=config_dir, variant="fp16")
    from safetensors.torch import load_file

    torch.save(load_file(str(path)), tmp_path / "tiny.ckpt")
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled without --trust-pickle"))
    with pytest.raises(InvalidInput, match=r"tiny\.ckpt is a pickle.*--trust-pickle"):
        load_ldm(tmp_path / "tiny.ckpt", config_dir=config_dir)
    monkeypatch.setattr(torch, "load", real_load)
    trusted = load_ldm(tmp_path / "tiny.ckpt", config_dir=config_dir, parts=("vae",), trust_pickle=True)
    assert torch.equal(trusted.vae.encoder.conv_in.weight, load_file(str(path))[f"{VAE_PREFIX}encoder.conv_in.weight"])
    # another architecture (a 4-channel img2img UNet against the inpainting configs), and a file missing a weight
    other = load_ldm(tiny_img2img_dir, parts=("vae", "unet"))
    save_file(ldm_checkpoint(other.vae, other.unet), str(tmp_path / "img2img.safetensors"))
    with pytest.raises(InvalidInput, match=r"its unet weights do not match .*unet/config\.json \(size mismatch"):
        load_ldm(tmp_path / "img2img.safetensors", config_dir=config_dir)
    partial = {k: v for k, v in load_file(str(path)).items() if "middle_block.1." not in k}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(InvalidInput, match=r"its unet weights do not match.*missing \['mid_block.*random weights"):
        load_ldm(tmp_path / "partial.safetensors", config_dir=config_dir)
    only_unet = {k: v for k, v in load_file(str(path)).items() if k.startswith(UNET_PREFIX)}
    save_file(only_unet, str(tmp_path / "unet-only.safetensors"))
    with pytest.raises(InvalidInput, match="holds no vae weights in the original LDM layout"):
        load_ldm(tmp_path / "unet-only.safetensors", config_dir=config_dir)


def test_cli_gives_the_same_immunization_and_edit_from_the_file(tiny_dir, single_file, tmp_path, run_tool,
                                                                run_in_process):
    path, config_dir = single_file
    save_image(blobs(1)[0], tmp_path / "p0.png")
    save_image(centre_mask()[0], tmp_path / "mask.png")
    (tmp_path / "photos.jsonl").write_text(json.dumps({"id": "p0", "image": "p0.png", "mask": "mask.png"}) + "\n")
    outputs = {}
    models = {"dir": ["--model-dir", tiny_dir], "file": ["--model-dir", path, "--config-dir", config_dir]}
    for name, model in models.items():
        attack = run_in_process("immunize", "encoder", "photos.jsonl", *model, "--steps", "3",
                                "--out-dir", f"imm-{name}", "-q")
        assert attack.returncode == 0, attack.stderr
        (tmp_path / f"imm-{name}.jsonl").write_text(attack.stdout)
        edit = run_in_process("immunize", "edit", f"imm-{name}.jsonl", *model, "--steps", "2",
                              "--out-dir", f"edit-{name}", "-q")
        assert edit.returncode == 0, edit.stderr
        outputs[name] = (attack.records[0], edit.records[0])
    for field, index in (("immunized", 0), ("edit_clean", 1), ("edit_immunized", 1)):
        images = [load_image(str(tmp_path / outputs[name][index][field])) for name in ("dir", "file")]
        assert torch.equal(*images), field
    # the real executables: no --config-dir is a usage error (2), a .ckpt without --trust-pickle invalid input (3)
    missing = run_tool("immunize", "edit", "photos.jsonl", "--model-dir", path, "--out-dir", "x")
    assert missing.returncode == 2 and "--config-dir DIR" in missing.stderr, missing.stderr
    shutil.copy(path, tmp_path / "tiny.ckpt")
    pickled = run_tool("immunize", "encoder", "photos.jsonl", "--model-dir", "tiny.ckpt", "--config-dir",
                       config_dir, "--out-dir", "y")
    assert pickled.returncode == 3 and "is a pickle" in pickled.stderr, pickled.stderr
