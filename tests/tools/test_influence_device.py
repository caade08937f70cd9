"""`influence slurm-script --gpus-per-task`: the array task trains on the GPU it asks for, or asks for none."""

import shlex

import pytest
import typer
from typer.testing import CliRunner

from tests.cli.test_help import app_of


@pytest.mark.parametrize(("gpus", "request_line", "device"), [(1, "#SBATCH --gpus-per-task=1", "auto"),
                                                              (2, "#SBATCH --gpus-per-task=2", "auto"),
                                                              (0, None, "cpu")])
def test_the_slurm_script_uses_the_gpus_it_asks_for(tmp_path, gpus, request_line, device):
    plan = tmp_path / "plan.jsonl"
    made = CliRunner().invoke(app_of("influence"), ["plan", "--num-units", "4", "--num-models", "2"])
    plan.write_text(made.stdout)
    script = CliRunner().invoke(app_of("influence"), ["slurm-script", "--plan", str(plan), "--recipe",
                                                      "oracle-linear", "--out-dir", str(tmp_path / "out"),
                                                      "--gpus-per-task", str(gpus)])
    assert script.exit_code == 0, script.output
    lines = script.stdout.splitlines()
    assert [line for line in lines if line.startswith("#SBATCH --gpus")] == ([request_line] if request_line else [])
    (train,) = [line for line in lines if line.startswith("influence train ")]
    command = typer.main.get_command(app_of("influence")).commands["train"]
    context = command.make_context("train", shlex.split(train)[2:])
    assert context.params["device"] == device
