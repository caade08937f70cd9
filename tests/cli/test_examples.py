"""Every command's `--help` ends with examples that run as written.

Each tool's examples run in one fresh folder, command after command in the order below (the order of
`TOOL --help` unless a later command makes what an earlier one reads), as bash runs them: the text is
taken from the `--help` a user sees, so what is printed is what is tested. They use bundled data only.
"""

import os
import re
import subprocess

import pytest
import typer

from tests.cli.test_help import HONOURED, app_of, help_text, leaf_commands
from tests.conftest import BIN, REAL_BIN, ROOT

# Where a tool's examples must run in another order than its --help lists the commands.
ORDER = {
    "certify": ["fit", "run", "recertify", "check", "summarize", "delta"],
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(REAL_BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}


def commands_of(tool: str) -> list[str]:
    listed = [name for name, _ in leaf_commands(typer.main.get_command(app_of(tool)))]
    order = ORDER.get(tool, listed)
    assert sorted(order) == sorted(listed), f"ORDER[{tool!r}] must name each command once"
    return order


def examples_in(help_output: str) -> str:
    """The script under `Examples:` at the end of a command's help, dedented."""
    _, found, rest = help_output.partition("\n  Examples:\n")
    assert found, "no Examples: section at the end of --help"
    lines = rest.rstrip("\n").splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines)


def shell_commands(script: str) -> list[str]:
    """The commands of a script: lines that are not comments, with their `\\` continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("tool", list(HONOURED))
def test_every_command_shows_two_or_three_examples(tool):
    for command in commands_of(tool):
        script = examples_in(help_text(tool, command))
        runs = shell_commands(script)
        assert 2 <= len(runs) <= 4, f"{tool} {command}: {len(runs)} example commands"
        name = tool.replace("_", "-")
        assert any(run.startswith(f"{name} {command}".rstrip()) or f"| {name} {command}".rstrip() in run
                   for run in runs), f"{tool} {command}: no example runs the command itself"
        assert script.lstrip().startswith("#"), f"{tool} {command}: say what the first example does"


@pytest.mark.slow
@pytest.mark.parametrize("tool", list(HONOURED))
def test_the_examples_run_as_written(tool, tmp_path):
    for command in commands_of(tool):
        script = examples_in(help_text(tool, command))
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=ENV,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (f"{tool} {command} examples failed ({result.returncode}):\n{script}\n"
                                        f"--- stderr ---\n{result.stderr[-3000:]}")
