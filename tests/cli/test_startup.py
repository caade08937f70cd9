"""Tools start in a blink: ``--help``, ``--version``, ``--print-config`` and usage errors import none of the
heavy packages; they are imported inside the commands that use them."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli.test_help import HONOURED, app_of
from tests.conftest import ROOT

HEAVY = ("torch", "torchvision", "timm", "diffusers", "bpy", "mitsuba", "ray")
PROBE = """
import json, sys
sys.path[:0] = [{root!r}, {lib!r}]
sys.argv = {argv!r}
from confidently_tools.{module} import main
try:
    main()
except SystemExit:
    pass
sys.stdout = sys.__stdout__
print(json.dumps(sorted(set({heavy!r}) & set(sys.modules))), file=sys.stderr)
"""


def heavy_after(module: str, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """The heavy packages a fresh interpreter holds after running the tool with ``argv`` (and ``env``)."""
    code = PROBE.format(root=str(ROOT), lib=str(ROOT / "lib"), argv=argv, module=module, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return json.loads(proc.stderr.strip().splitlines()[-1])


def invocations(tool: str) -> list[list[str]]:
    """Every way of starting the tool that must stay light: each command's help, and the config print and a
    usage error of one (they stop in the shared skeleton, before any command body runs)."""
    name = tool.replace("_", "-")
    commands = [command.split() if command else [] for command in HONOURED[tool]]
    return [[name, "--help"], [name, "--version"], [name, *commands[0], "--print-config"],
            [name, *commands[0], "--no-such-flag"], *([name, *words, "--help"] for words in commands)]


@pytest.mark.parametrize("tool", sorted(HONOURED))
def test_help_version_config_and_usage_errors_import_no_heavy_package(tool):
    app_of(tool)  # the tool imports at all
    with ThreadPoolExecutor(2) as pool:
        found = dict(zip(map(" ".join, invocations(tool)), pool.map(lambda argv: heavy_after(tool, argv),
                                                                     invocations(tool)), strict=True))
    assert {argv: heavy for argv, heavy in found.items() if heavy} == {}



def test_shell_completion_completes_commands_and_flags_without_torch():
    completing = {"_ADVTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "advtrain eval --con", "COMP_CWORD": "2"}
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "advtrain")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **completing})
    assert proc.returncode == 0 and "--constraint" in proc.stdout.split()
    assert heavy_after("advtrain", ["advtrain"], completing) == []
    # the shell is detected from the parent process, as when a user types it in bash (a second command
    # keeps bash from replacing itself with the tool)
    command = f"'{sys.executable}' '{ROOT / 'bin' / 'advtrain'}' --show-completion; exit $?"
    script = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert "_ADVTRAIN_COMPLETE" in script.stdout


def test_a_usage_error_found_in_a_command_body_imports_no_heavy_package():
    """The shared skeleton seeds torch when torch is first imported, not before the command runs."""
    argv = ["immunize", "encoder", "-", "--model-dir", "x", "--out-dir", "o", "--preset", "bad"]
    assert heavy_after("immunize", argv) == []


def test_seeding_before_torch_is_imported_seeds_it_on_import():
    code = ("from confidently.run.seeding import seed_everything\nimport sys\nseed_everything(5)\n"
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\nimport numpy, torch\n"
            "first = (torch.rand(3).tolist(), numpy.random.rand(3).tolist())\n"
            "torch.manual_seed(5); numpy.random.seed(5)\n"
            "assert first == (torch.rand(3).tolist(), numpy.random.rand(3).tolist())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    assert proc.returncode == 0, proc.stderr
