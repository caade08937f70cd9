"""`certify run --early-stop` and the CUDA out-of-memory back-off, run in process (a fake OOM on CPU)."""

import json

import pytest
import torch
from confidently.io.images import save_image
from confidently.models import create_model, save_model


@pytest.fixture
def photos(tmp_path):
    """A random tiny ViT (patch 4 on 32²) and 12 photos: some certified at once, some never."""
    torch.manual_seed(0)
    save_model(create_model("tiny_vit", 4, depth=1), tmp_path / "vit.safetensors")
    generator = torch.Generator().manual_seed(0)
    lines = []
    for index in range(12):
        image = torch.rand(3, 32, 32, generator=generator) * (index % 3) / 2  # dark, grey and bright photos
        save_image(image, tmp_path / f"{index}.png")
        lines.append(json.dumps({"id": str(index), "image": f"{index}.png", "label": index % 4}))
    (tmp_path / "photos.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


RUN = ("run", "photos.jsonl", "--model", "vit.safetensors", "--ablation-size", "6", "--patch-sizes", "1,2")


def test_early_stop_keeps_every_certificate_and_marks_partial_counts(photos, run_in_process):
    full = run_in_process("certify", *RUN, "--batch-size", "64", cwd=photos)
    early = run_in_process("certify", *RUN, "--early-stop", "--batch-size", "64", cwd=photos)
    again = run_in_process("certify", *RUN, "--early-stop", "--batch-size", "5", cwd=photos)
    assert full.returncode == early.returncode == again.returncode == 0, early.stderr
    assert early.stdout == again.stdout  # the rounds do not depend on the batch size
    pairs = list(zip((r["certify"] for r in full.records), (r["certify"] for r in early.records), strict=True))
    for whole, part in pairs:
        assert part["certified"] == whole["certified"] and part["certified_correct"] == whole["certified_correct"]
        taken = part["early_stop"]["ablations"]
        assert taken % 4 == 0 and 0 < taken <= 32 and part["vote"]["partial"] == (taken < 32)
        assert part["max_certified_patch"] <= whole["max_certified_patch"]  # a sound lower bound
        assert "early_stop" not in whole and "partial" not in whole["vote"]
    assert any(part["vote"]["partial"] and part["certified"]["2"] for _, part in pairs)
    assert any(part["vote"]["partial"] and not part["certified"]["1"] for _, part in pairs)
    refused = run_in_process("certify", *RUN, "--early-stop", "--votes-out", "v.safetensors", cwd=photos)
    assert refused.returncode == 2 and "--early-stop" in refused.stderr


def test_out_of_memory_halves_the_batch_and_keeps_the_records(photos, run_in_process, monkeypatch):
    import confidently.smoothing.ablation as smoothing

    normal = run_in_process("certify", *RUN, "--batch-size", "64", cwd=photos)
    real = smoothing.vit_forward_kept
    rows = []

    def small_memory(net, x, keep, *args, **kwargs):
        rows.append(len(keep))
        if len(keep) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(net, x, keep, *args, **kwargs)

    monkeypatch.setattr(smoothing, "vit_forward_kept", small_memory)
    backed_off = run_in_process("certify", *RUN, "--batch-size", "64", cwd=photos)
    assert backed_off.returncode == 0, backed_off.stderr
    assert backed_off.stdout == normal.stdout
    assert "out of memory: retrying with batch size 32" in backed_off.stderr and max(rows) > 16
    assert rows[-1] <= 16
