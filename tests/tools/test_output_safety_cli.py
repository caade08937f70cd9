"""DESIGN rule 9 for every tool: an output path that holds a user's file (or a non-empty folder of theirs) is
refused with exit 2 before any work, the file stays byte for byte; --force writes over it, and a tool's own
output of an earlier run is replaced without --force."""

from __future__ import annotations

import json

import pytest
import torch
from confidently.io.atomic import written_by

MINE = b"my notes, not a confidently file\n"
RENDERS = [{"id": f"r{i}", "object": obj, "environment": "white", "is_correct": i % 2 == 0}
           for i, obj in enumerate(["cube", "ball", "cube", "ball"])]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Inputs the commands name: tiny untrained models, three digit records, a texture, render records, a plan."""
    import subprocess

    from confidently.io.artifacts import artifact_metadata
    from confidently.models import create_model, save_model
    from confidently.unadversarial import save_texture

    from tests.conftest import tool_path

    root = tmp_path_factory.mktemp("safety")
    torch.manual_seed(0)
    save_model(create_model("tiny_resnet", 10), root / "model.safetensors")
    save_model(create_model("tiny_vit", 10), root / "vit.safetensors")
    save_texture(root / "texture.safetensors", torch.rand(1, 3, 8, 8), [0],
                 artifact_metadata(tool="unadv-patch", kind="texture"))
    (root / "renders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RENDERS))
    for command, out in ((["dataset", "export", "demo:digits", "--split", "test", "--out", "digits"], "export.jsonl"),
                         (["influence", "plan", "--recipe", "oracle-linear", "--num-models", "4"], "plan.jsonl")):
        done = subprocess.run([tool_path(command[0]), *command[1:]], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        (root / out).write_text(done.stdout)
    lines = (root / "digits" / "manifest.jsonl").read_text().splitlines()
    (root / "digits" / "three.jsonl").write_text("\n".join(lines[:3]) + "\n")
    return root


M, VIT, DIGITS = "{ws}/model.safetensors", "{ws}/vit.safetensors", ("--data", "demo:digits", "--split", "test")
# (tool, arguments with OUT where the guarded output goes, the output's name; a trailing / makes it a folder)
REFUSED = [
    ("advtrain", ["train", *DIGITS, "--epochs", "1", "--out", "OUT"], "m.safetensors"),
    ("advtrain", ["train", *DIGITS, "--epochs", "1", "--out", "m.safetensors", "--resume"], "m.safetensors.ckpt"),
    ("advtrain", ["transfer", "--source", M, *DIGITS, "--out", "OUT"], "t.safetensors"),
    ("advtrain", ["attack", "--model", M, *DIGITS, "--shard-out", "OUT"], "adv.safetensors"),
    ("advtrain", ["features", "--model", M, *DIGITS, "--out", "OUT"], "f.safetensors"),
    ("advtrain", ["import", M, "--arch", "tiny_resnet", "--out", "OUT"], "i.safetensors"),
    ("certify", ["run", "-", "--model", VIT, "--summary", "OUT"], "s.json"),
    ("certify", ["run", "-", "--model", VIT, "--votes-out", "OUT"], "v.safetensors"),
    ("certify", ["recertify", "--votes", "{ws}/none.safetensors", "--summary", "OUT"], "s.json"),
    ("certify", ["fit", *DIGITS, "--out", "OUT"], "fit.safetensors"),
    ("ablate", ["order", "-", "--out", "OUT"], "o.safetensors"),
    ("ablate", ["curve", "-", "--model", M, "--summary", "OUT"], "c.json"),
    ("ablate", ["lime", "-", "--model", M, "--out", "OUT"], "l.safetensors"),
    ("ablate", ["consistency", "-", "--model", M, "--summary", "OUT"], "j.json"),
    ("ablate", ["topk", "-", "--model", M, "--explanations", "random", "--summary", "OUT"], "k.json"),
    ("ablate", ["apply", "-", "--remove", "1", "--out", "OUT"], "a.safetensors"),
    ("ablate", ["fit", *DIGITS, "--out", "OUT"], "fit.safetensors"),
    ("ablate", ["plot", "{ws}/none.json", "--out", "OUT"], "plot.png"),
    ("unadv-patch", ["train", "--model", M, *DIGITS, "--out", "OUT"], "p.safetensors"),
    ("unadv-patch", ["baseline", "noise", "--model", M, *DIGITS, "--out", "OUT"], "b.safetensors"),
    ("unadv-patch", ["apply", "-", "--patches", "{ws}/none.safetensors", "--out", "OUT"], "a.safetensors"),
    ("unadv-patch", ["texture", "--model", M, "--mesh", "builtin:cube", "--class-id", "0", "--out", "OUT"],
     "t.safetensors"),
    ("unadv-patch", ["export", "--texture", "{ws}/texture.safetensors", "--out", "OUT"], "t.png"),
    ("immunize", ["tiny-model", "--out", "OUT"], "ldm/"),
    ("immunize", ["random", "-", "--model-dir", "{ws}/ldm", "--out-dir", "OUT"], "immunized/"),
    ("immunize", ["encoder", "-", "--model-dir", "{ws}/ldm", "--out-dir", "OUT"], "immunized/"),
    ("immunize", ["edit", "-", "--model-dir", "{ws}/ldm", "--out-dir", "OUT"], "edits/"),
    ("immunize", ["score", "-", "--summary", "OUT"], "scores.json"),
    ("plant-backdoor", ["trigger", "--out", "OUT"], "t.safetensors"),
    ("plant-backdoor", ["poison", "-", "--ids-out", "OUT"], "ids.jsonl"),
    ("plant-backdoor", ["poison", "-", "--summary", "OUT"], "counts.json"),
    ("plant-backdoor", ["poison", "-", "--materialize", "OUT"], "m.safetensors"),
    ("plant-backdoor", ["experiment", "--source", "demo:digits", "--target", "demo:digits", "--summary", "OUT"],
     "grid.json"),
    ("influence", ["train", "{ws}/plan.jsonl", "--recipe", "oracle-linear", "--out-dir", "OUT"], "farm/"),
    ("influence", ["estimate", "-", "--out", "OUT"], "inf.safetensors"),
    ("influence", ["estimate", "-", "--partial-out", "OUT"], "part.safetensors"),
    ("dataset", ["split", "{ws}/digits/manifest.jsonl", "--out", "OUT"], "splits/"),
    ("render-3db", ["analyze", "{ws}/renders.jsonl", "--plots", "OUT"], "plots/"),
    ("render-3db", ["analyze", "{ws}/renders.jsonl", "--heatmap", "object,environment", "--tensors", "OUT"],
     "h.safetensors"),
]


def place_users_output(where, name: str):
    """The user's file at the output path (or their photo in the output folder); returns what must survive."""
    target = where / name.rstrip("/")
    if name.endswith("/"):
        target.mkdir()
        target = target / "holiday.jpg"
    target.write_bytes(MINE)
    return target


def arguments(args: list[str], ws, out: str) -> list[str]:
    return [out if a == "OUT" else a.replace("{ws}", str(ws)) for a in args]


@pytest.mark.parametrize(("tool", "args", "name"), REFUSED, ids=[f"{t}-{a[0]}-{n}" for t, a, n in REFUSED])
def test_a_users_file_at_an_output_is_refused_before_any_work(tool, args, name, ws, run_in_process, tmp_path):
    kept = place_users_output(tmp_path, name)
    refused = run_in_process(tool, *arguments(args, ws, name.rstrip("/")))
    assert refused.returncode == 2, refused.stderr
    assert name.rstrip("/") in refused.stderr and "--force" in refused.stderr
    assert kept.read_bytes() == MINE


# The cheapest command per tool: forced over the user's file, then run again over its own output.
FORCED = [
    ("advtrain", ["features", "--model", M, *DIGITS, "--out", "OUT"], "f.safetensors"),
    ("certify", ["run", "{ws}/digits/three.jsonl", "--model", VIT, "--ablation", "column", "--ablation-size", "8",
                 "--patch-sizes", "1", "--summary", "OUT"], "s.json"),
    ("ablate", ["order", "{ws}/digits/three.jsonl", "--patch-size", "8", "--out", "OUT"], "o.safetensors"),
    ("unadv-patch", ["export", "--texture", "{ws}/texture.safetensors", "--out", "OUT"], "t.png"),
    ("immunize", ["tiny-model", "--out", "OUT", "--size", "8", "--unet", "img2img"], "ldm/"),
    ("plant-backdoor", ["trigger", "--out", "OUT", "--shape", "3,8,8"], "t.safetensors"),
    ("influence", ["train", "{ws}/plan.jsonl", "--recipe", "oracle-linear", "--out-dir", "OUT"], "farm/"),
    ("dataset", ["split", "{ws}/digits/manifest.jsonl", "--out", "OUT"], "splits/"),
    ("render-3db", ["analyze", "{ws}/renders.jsonl", "--plots", "OUT"], "plots/"),
]


@pytest.mark.parametrize(("tool", "args", "name"), FORCED, ids=[f"{t}-{a[0]}" for t, a, _ in FORCED])
def test_force_writes_over_it_and_the_tools_own_output_needs_no_force(tool, args, name, ws, run_tool, tmp_path):
    kept = place_users_output(tmp_path, name)
    command = arguments(args, ws, name.rstrip("/"))
    assert run_tool(tool, *command).returncode == 2
    forced = run_tool(tool, *command, "--force")
    assert forced.returncode == 0, forced.stderr
    output = tmp_path / name.rstrip("/")
    assert written_by(output) == tool
    if name.endswith("/"):
        assert kept.read_bytes() == MINE  # forced into the user's folder, the tool still deletes nothing of theirs
    again = run_tool(tool, *command)  # its own output of the run before: no --force needed
    assert again.returncode == 0, again.stderr
    assert written_by(output) == tool
