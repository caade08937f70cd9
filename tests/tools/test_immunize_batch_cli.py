"""`immunize encoder|diffusion --batch-size`: the same photos and records whatever the batch (issue 21).

Mixed sizes (--size 0 keeps each photo's 32×32 or 16×24) are batched by size within each --batch-size
records, in stream order; a bad record in a batch only fails itself; --resume reuses batched results.
Batched CPU kernels round differently (losses agree to ~1e-5 relative): the ℓ∞ photos are identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from confidently.io.artifacts import load_artifact
from confidently.io.images import save_image

from tests.tools.test_immunize_cli import in_process

SIZES = [(32, 32), (16, 24), (32, 32), (32, 32), (16, 24)]
VOLATILE = {"seconds", "immunized", "tensors"}


def run(args: list[str], cwd: Path, monkeypatch, capsys, stdin: str = "") -> tuple[int, list[dict], str]:
    code, out, err = in_process(args, stdin, cwd, monkeypatch, capsys)
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from confidently.immunize import write_tiny_model

    root = tmp_path_factory.mktemp("immunize-batch")
    generator = torch.Generator().manual_seed(0)
    lines = []
    for index, size in enumerate(SIZES):
        small = torch.rand(1, 3, 4, 4, generator=generator)
        save_image(torch.nn.functional.interpolate(small, size=size, mode="bicubic").clamp(0, 1)[0],
                   root / f"p{index}.png")
        lines.append({"id": f"photo/{index}", "image": f"p{index}.png"})
    (root / "photos.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_tiny_model(root / "tiny", size=32, unet="img2img", seed=0)
    return root


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE and not k.startswith("loss")}


METHODS = {"encoder": ["--steps", "6", "--random-start"],
           "diffusion": ["--steps", "2", "--grad-reps", "2", "--attack-denoise-steps", "2", "--random-start"]}


@pytest.mark.parametrize("method", list(METHODS))
def test_batch_size_changes_no_photo(work, monkeypatch, capsys, method):
    outputs = {}
    for batch in (1, 3):
        code, rows, err = run([method, "photos.jsonl", "--model-dir", "tiny", "--size", "0", "--out-dir",
                               f"{method}-b{batch}", "--batch-size", str(batch), *METHODS[method], "-v"],
                              work, monkeypatch, capsys)
        assert code == 0, err
        assert [row["id"] for row in rows] == [f"photo/{i}" for i in range(len(SIZES))]  # stream order kept
        assert [row["size"] for row in rows] == [list(size) for size in SIZES]
        assert "photo/4: step 2" in err  # per-photo progress from inside a batch
        outputs[batch] = rows
    for one, three in zip(outputs[1], outputs[3], strict=True):
        assert comparable(one) == comparable(three)
        assert one["loss_final"] == pytest.approx(three["loss_final"], rel=1e-4)
        a, b = (load_artifact(work / row["tensors"])[0] for row in (one, three))
        assert float((a["x_adv"] - b["x_adv"]).abs().max()) <= 1e-6
        assert torch.equal(a["x_adv_u8"], b["x_adv_u8"])
        assert (work / one["immunized"]).read_bytes() == (work / three["immunized"]).read_bytes()


def test_resume_and_a_bad_record_inside_a_batch(work, monkeypatch, capsys):
    args = ["encoder", "photos.jsonl", "--model-dir", "tiny", "--size", "0", "--out-dir", "resume",
            "--batch-size", "4", "--steps", "3"]
    code, first, err = run(args, work, monkeypatch, capsys)
    assert code == 0, err
    (work / first[2]["tensors"]).unlink()  # as if interrupted before photo/2 was written
    code, again, err = run([*args, "--resume"], work, monkeypatch, capsys)
    assert code == 0 and err.count("reused") == len(SIZES) - 1, err
    assert [comparable(row) for row in again] == [comparable(row) for row in first]
    assert again[0] == first[0]
    # a missing photo fails alone; its batch-mates are immunized as without it
    lines = (work / "photos.jsonl").read_text().splitlines()
    broken = "\n".join([lines[0], json.dumps({"id": "gone", "image": "nope.png"}), *lines[1:]]) + "\n"
    code, rows, err = run([*args[:1], "-", *args[2:7], "bad", *args[8:], "--skip-invalid"], work, monkeypatch,
                          capsys, broken)
    assert code == 0, err
    assert [row["id"] for row in rows] == ["photo/0", "gone", *[f"photo/{i}" for i in range(1, len(SIZES))]]
    assert "error" in rows[1]
    a, b = (load_artifact(work / row["tensors"])[0] for row in (first[3], rows[4]))
    assert torch.equal(a["x_adv_u8"], b["x_adv_u8"])


def test_out_of_memory_halves_the_batch_and_changes_no_photo(work, monkeypatch, capsys):
    """A CUDA out-of-memory error for more than one photo at a time (injected): the batch halves down to
    one photo, which fits, and the records and files are those of --batch-size 1."""
    from confidently.immunize import workers

    args = ["encoder", "photos.jsonl", "--model-dir", "tiny", "--size", "0", "--steps", "3", "--random-start"]
    code, alone, err = run([*args, "--batch-size", "1", "--out-dir", "oom-b1"], work, monkeypatch, capsys)
    assert code == 0, err
    real, calls = workers.immunize_batch, []

    def small_device(ldm, requests, *rest):
        calls.append(len(requests))
        if len(requests) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(ldm, requests, *rest)

    monkeypatch.setattr(workers, "immunize_batch", small_device)
    code, backed, err = run([*args, "--batch-size", "4", "--out-dir", "oom-b4"], work, monkeypatch, capsys)
    assert code == 0, err
    assert "out of memory: retrying with batch size" in err
    assert max(calls[calls.index(1):]) == 1  # once it fit alone, no larger batch was tried again
    assert [comparable(row) for row in backed] == [comparable(row) for row in alone]
    for one, other in zip(alone, backed, strict=True):
        assert (work / one["immunized"]).read_bytes() == (work / other["immunized"]).read_bytes()
