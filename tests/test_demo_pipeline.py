"""`make demo-quick` (examples/demo_quick.sh): one small step of every tool, composed through pipes and files,
ending in one report.

It runs the installed executables themselves (``REAL_BIN``), not the warm launcher's shims the rest of
the suite uses, so the real start-up path stays tested."""

import os
import subprocess

from tests.conftest import REAL_BIN, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(REAL_BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}


def test_short_demo_ends_in_one_report(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "examples" / "demo_quick.sh"), str(tmp_path / "quick")],
                            capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    page = tmp_path / "quick" / "site" / "index.html"
    assert result.stdout.strip().endswith(str(page.resolve()))
    html = page.read_text()
    for section in ("training", "advtrain", "certify", "ablate", "unadv-patch", "plant-backdoor", "influence",
                    "render-3db"):
        assert f'id="{section}"' in html
        assert any((tmp_path / "quick" / "site" / section).glob("*.png")), section
    edits = (tmp_path / "quick" / "edits.jsonl").read_text().splitlines()
    assert len(edits) == 1 and "immunize" in edits[0]
    assert "-> " in result.stderr  # each step says where its outputs are
