"""`report` as a user runs it: several files, a pipe, unknown kinds, nothing to draw, bad input."""

import os
import subprocess
from pathlib import Path

from tests.conftest import BIN, ROOT

FIXTURES = ROOT / "tests" / "report" / "fixtures"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}


def shell(cwd: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=300)


def test_several_files_and_a_pipe_make_one_site(tmp_path):
    result = shell(tmp_path, f"cat {FIXTURES}/influence.jsonl | report {FIXTURES}/certify.jsonl "
                             f"{FIXTURES}/ablate.jsonl - --out site --title 'demo report'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((tmp_path / "site" / "index.html").resolve())
    html = (tmp_path / "site" / "index.html").read_text()
    assert "demo report" in html and all(f'id="{name}"' in html for name in ("certify", "ablate", "influence"))


def test_unknown_kinds_are_skipped_and_nothing_drawn_exits_4(tmp_path):
    (tmp_path / "other.jsonl").write_text('{"kind": "mystery"}\n')
    mixed = shell(tmp_path, f"report {FIXTURES}/certify.jsonl other.jsonl --out site")
    assert mixed.returncode == 0 and "skipped 1" in mixed.stderr
    nothing = shell(tmp_path, "report other.jsonl --out empty")
    assert nothing.returncode == 4 and not (tmp_path / "empty").exists()
    (tmp_path / "broken.jsonl").write_text('{"kind": "mystery"}\n{oops\n')
    broken = shell(tmp_path, "report broken.jsonl --out b")
    assert broken.returncode == 3 and "broken.jsonl" in broken.stderr
    missing = shell(tmp_path, "report nowhere.jsonl --out b")
    assert missing.returncode == 2


def test_out_never_deletes_the_users_files(tmp_path):
    (tmp_path / "results" / "old").mkdir(parents=True)
    (tmp_path / "results" / "certify.jsonl").write_text((FIXTURES / "certify.jsonl").read_text())
    (tmp_path / "results" / "old" / "notes.txt").write_text("mine")
    refused = shell(tmp_path, "report results/certify.jsonl --out results")
    assert refused.returncode == 2 and "--force" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "results" / "index.html").exists()
    for flags in ("--force", ""):  # forced once, then it is report's own folder
        result = shell(tmp_path, f"report results/certify.jsonl --out results {flags}")
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "old" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "results" / "certify.jsonl").read_text() == (FIXTURES / "certify.jsonl").read_text()
