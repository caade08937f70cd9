"""Every tool's `--help` examples, run as written where `--device auto` finds the GPU."""

from __future__ import annotations

import subprocess

import pytest

from tests.cli.test_examples import commands_of, examples_in
from tests.cli.test_help import HONOURED, help_text
from tests.cuda.conftest import ENV


@pytest.mark.parametrize("tool", list(HONOURED))
def test_the_examples_run_on_the_gpu(tool, device, tmp_path):
    for command in commands_of(tool):
        script = examples_in(help_text(tool, command))
        env = ENV if device == "cuda" else {**ENV, "CUDA_VISIBLE_DEVICES": ""}  # auto then means the CPU
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (f"{tool} {command} examples failed on {device} ({result.returncode}):\n"
                                        f"{script}\n--- stderr ---\n{result.stderr[-3000:]}")
