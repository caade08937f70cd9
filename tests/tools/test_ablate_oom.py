"""`ablate` on CUDA out-of-memory: every command that runs a model halves its forwards' batch until they fit and
writes exactly the records of a run that had the memory (the error injected on the CPU)."""

import json

import pytest
import torch
from confidently.data import open_dataset
from confidently.data.loader import collect
from confidently.models import create_model, save_model
from PIL import Image
from safetensors.torch import load_file

LIMIT = 5  # rows a forward may take before the injected out-of-memory error
N = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N test digits as PNGs with their manifest, and an untrained tiny ResNet and ViT (the records only need to
    be the same, not good)."""
    root = tmp_path_factory.mktemp("ablate-oom")
    images, labels = collect(open_dataset("demo:digits?background=noisy", "test"))
    lines = []
    for i in range(N):
        pixels = (images[i].permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
        lines.append(json.dumps({"id": f"d{i}", "image": f"{i}.png", "label": int(labels[i])}))
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    for arch, name in (("tiny_resnet", "rn"), ("tiny_vit", "vit")):
        torch.manual_seed(0)
        save_model(create_model(arch, 10, img_size=32).eval(), root / f"{name}.safetensors")
    return root


@pytest.fixture
def out_of_memory(monkeypatch):
    """``inject()`` makes every forward of more than LIMIT rows (the plain one, and a ViT's on kept tokens) raise
    CUDA's out-of-memory error; the list holds the sizes refused."""
    import confidently.missingness.model as missingness_model
    from confidently.models.classifier import Classifier

    refused = []

    def guard(rows: int) -> None:
        if rows > LIMIT:
            refused.append(rows)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {rows} GiB (injected)")

    def inject():
        forward, kept = Classifier.forward, missingness_model.vit_forward_kept

        def limited(self, x):
            guard(len(x))
            return forward(self, x)

        def limited_kept(net, x, keep):
            guard(len(x))
            return kept(net, x, keep)

        monkeypatch.setattr(Classifier, "forward", limited)
        monkeypatch.setattr(missingness_model, "vit_forward_kept", limited_kept)

    return inject, refused


COMMANDS = {
    "order": ("--ref-model", "rn.safetensors", "--order", "saliency", "--out", "OUT"),
    "curve": ("--model", "rn.safetensors", "--fill", "black", "--order", "saliency", "--ref-model", "rn.safetensors",
              "--step", "16"),
    "curve-drop": ("--model", "vit.safetensors", "--fill", "drop", "--order", "random", "--step", "16"),
    "lime": ("--model", "rn.safetensors", "--samples", "20", "--out", "OUT"),
    "consistency": ("--model", "rn.safetensors", "--colors", "black;random-noise", "--samples", "10", "--k", "2,4"),
    "topk": ("--model", "rn.safetensors", "--fill", "mean", "--explanations", "random", "--kmax", "16", "--step",
             "8"),
}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_out_of_memory_halves_the_batch_and_changes_no_record(run_in_process, folder, out_of_memory, case):
    inject, refused = out_of_memory
    command = case.split("-")[0]

    def run(out: str):
        args = [a.replace("OUT", out) for a in COMMANDS[case]]
        result = run_in_process("ablate", command, "test.jsonl", *args, "--patch-size", "4", "--batch-size", "16",
                                cwd=folder)
        assert result.returncode == 0, result.stderr
        return result

    plenty = run(f"{case}-plenty.safetensors")
    inject()
    tight = run(f"{case}-tight.safetensors")
    assert refused and min(refused) > LIMIT  # forwards really ran out of memory ...
    assert "out of memory: retrying with batch size" in tight.stderr  # ... and the tool said what it did
    assert len(plenty.records) == N
    if command != "lime":
        assert tight.records == plenty.records
    else:  # LIME's scores are regressed from probabilities, which CPU kernels for 4 rows and for 16 compute
        # 1e-7 apart (as another --batch-size does): its records agree to their printed 6 decimals, ±1 in the last
        assert same(tight.records, plenty.records, 1.5e-6)
    if "OUT" in COMMANDS[case]:
        kept, halved = (load_file(folder / f"{case}-{run}.safetensors") for run in ("plenty", "tight"))
        assert kept.keys() == halved.keys()
        for key in kept:
            assert torch.equal(kept[key], halved[key]) if command != "lime" else \
                torch.allclose(kept[key].double(), halved[key].double(), rtol=0, atol=1e-6)


def same(left, right, tolerance: float) -> bool:
    """Equal records, floats within ``tolerance``."""
    if isinstance(left, float) or isinstance(right, float):
        return abs(left - right) <= tolerance
    if isinstance(left, dict):
        return isinstance(right, dict) and left.keys() == right.keys() and all(
            same(left[k], right[k], tolerance) for k in left)
    if isinstance(left, list):
        return isinstance(right, list) and len(left) == len(right) and all(
            same(a, b, tolerance) for a, b in zip(left, right, strict=True))
    return left == right
