"""A short version of `make demo`: tools composed through pipes and files, ending in one report.

It runs the installed executables themselves (``REAL_BIN``), not the warm launcher's shims the rest of
the suite uses, so the real start-up path stays tested."""

import os
import subprocess

from tests.conftest import REAL_BIN, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(REAL_BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}

PIPELINE = """
set -euo pipefail
dataset export "demo:digits?background=noisy" --split test --limit 16 --out digits > digits.jsonl
advtrain train --data "demo:digits?background=noisy" --split train --arch tiny_resnet --epochs 1 \\
  --out cnn.safetensors > /dev/null
advtrain eval --model cnn.safetensors --data digits.jsonl --eps 0,0.25 --steps 2 > robustness.jsonl
ablate curve digits.jsonl --model cnn.safetensors --fill black --patch-size 4 --step 16 -q > curve.jsonl
plant-backdoor experiment --source "demo:digits?size=8" --source-split train --source-test-split test \\
  --source-classes 0-4 --target "demo:digits?size=8" --target-split train --target-test-split test \\
  --target-classes 5-9 --size 2 --color 1,1,1 --modes fixed --epochs-source 2 --epochs-target 2 -q > runs.jsonl
influence plan --recipe oracle-linear --num-models 8 \\
  | influence train --recipe oracle-linear --out-dir farm | influence estimate > ranking.jsonl
cat > scene.yaml <<'YAML'
objects: [{id: mug, builtin: mug, label: 3}]
environments: [{id: white, solid: [1, 1, 1]}]
render_args: {engine: null, resolution: 32}
policy: {module: grid, samples_per_dim: 3}
controls:
  - {module: orientation, rotation_x: 0, rotation_y: 0, rotation_z: [-3, 3]}
  - {module: camera, view_point_x: 0, view_point_y: -1, view_point_z: 0.3, focal_length: 50, zoom_factor: [0.8, 1.2]}
YAML
render-3db run scene.yaml --model cnn.safetensors --images-dir renders --out renders.jsonl
report robustness.jsonl curve.jsonl runs.jsonl ranking.jsonl renders.jsonl --out site --title "short demo"
"""


def test_short_demo_ends_in_one_report(tmp_path):
    result = subprocess.run(["bash", "-c", PIPELINE], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    page = tmp_path / "site" / "index.html"
    assert result.stdout.strip().endswith(str(page.resolve()))
    html = page.read_text()
    for section in ("advtrain", "ablate", "plant-backdoor", "influence", "render-3db"):
        assert f'id="{section}"' in html
        assert any((tmp_path / "site" / section).glob("*.png"))
