"""Shared fixtures: one torch thread, the installed executables, tiny trained models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
REAL_BIN = Path(sys.executable).parent
TOOLS = ("dataset", "advtrain", "certify", "ablate", "plant-backdoor", "influence", "report", "unadv-patch",
         "immunize", "render-3db")


def real_tool_path(name: str) -> str:
    """The executable a user runs (the installed console script, else bin/)."""
    installed = REAL_BIN / name
    return str(installed if installed.exists() else ROOT / "bin" / name)


def _write_shims() -> Path:
    """One shim per tool in a fresh folder: it runs the tool through the warm server (tests/warm), or, where
    none runs (CONFIDENTLY_TEST_COLD=1, the xdist controller), becomes the real executable."""
    folder = Path(tempfile.mkdtemp(prefix="confidently-warm-"))
    for name in TOOLS:
        shim = folder / name
        shim.write_text(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'warm')!r})\n"
                        f"import client\nclient.main({name!r}, {real_tool_path(name)!r}, {str(folder)!r})\n")
        shim.chmod(0o755)
    return folder


BIN = _write_shims()  # tests put these first on PATH: each tool start is a fork, not a 5 s interpreter start
_SERVER: subprocess.Popen | None = None


def tool_path(name: str) -> str:
    return str(BIN / name)


def pytest_configure(config):
    """Start the warm server in each process that runs tests (not in an xdist controller)."""
    global _SERVER
    controller = getattr(config, "workerinput", None) is None and (config.getoption("numprocesses", None) or 0)
    if controller or os.environ.get("CONFIDENTLY_TEST_COLD") == "1":
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    with open(BIN / "server.log", "w") as log:
        _SERVER = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm" / "server.py"), str(BIN)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=ROOT)
    (BIN / "server.pid").write_text(str(_SERVER.pid))


def pytest_unconfigure(config):
    if _SERVER is not None:
        _SERVER.kill()
        _SERVER.wait()
    shutil.rmtree(BIN, ignore_errors=True)


class ToolResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture
def run_tool(tmp_path):
    """Run an installed tool as a user would; returns code, stdout, stderr and parsed records."""

    def run(name: str, *args: str, input: str | None = None, cwd: Path | None = None,
            timeout: float = 300) -> ToolResult:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
        proc = subprocess.run([tool_path(name), *map(str, args)], input=input if input is not None else "",
                              capture_output=True, text=True, cwd=cwd or tmp_path, env=env, timeout=timeout)
        return ToolResult(proc)

    return run


@pytest.fixture
def run_in_process(tmp_path, monkeypatch, capsys):
    """A tool's real command line (its ``main``) in this process, from ``tmp_path`` with empty stdin: no
    interpreter and torch start (3-8 s a call on two busy cores), for the many cases that stop before any
    work. Pipes and finished runs go through :func:`run_tool`'s executables."""
    import importlib
    import io

    def run(name: str, *args: str, cwd: Path | None = None) -> ToolResult:
        module = importlib.import_module("confidently_tools." + name.replace("-", "_"))
        monkeypatch.chdir(cwd or tmp_path)
        monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        with pytest.raises(SystemExit) as exit_info:
            module.main()
        captured = capsys.readouterr()
        return ToolResult(subprocess.CompletedProcess(args, exit_info.value.code, captured.out, captured.err))

    return run


@pytest.fixture(scope="session")
def digits_tensors():
    from confidently.data import open_dataset
    from confidently.data.loader import collect

    return collect(open_dataset("demo:digits", "train")), collect(open_dataset("demo:digits", "test"))


@pytest.fixture(scope="session")
def trained_resnet(digits_tensors):
    """A tiny ResNet trained on demo:digits (about 10 s on one core)."""
    from confidently.data.dataset import ImageDataset
    from confidently.models import create_model
    from confidently.training import TrainConfig, train_classifier

    torch.manual_seed(0)
    model = create_model("tiny_resnet", 10, classes=[str(i) for i in range(10)])
    (train, _) = digits_tensors
    return train_classifier(model, ImageDataset.from_tensors(*train), TrainConfig(epochs=5, lr=3e-3, shift=2))


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
