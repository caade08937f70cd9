"""The wheel a user installs: every library package, the tools as ``confidently_tools`` (no top-level ``tools``
to collide with another project's), and a console script per tool that starts from the installed files."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TOOLS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("confidently-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_no_top_level_tools(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"confidently", "confidently_tools"}
    library = {str(path.parent.relative_to(ROOT / "lib"))
               for path in (ROOT / "lib" / "confidently").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in library} <= set(names)  # no package left out of the list
    assert {f"confidently_tools/{tool.replace('-', '_')}.py" for tool in TOOLS} <= set(names)
    assert any(name.startswith("confidently/schemas/") and name.endswith(".json") for name in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for tool in TOOLS:
        assert f"{tool} = confidently_tools.{tool.replace('-', '_')}:main" in entry_points


@pytest.mark.slow
def test_installed_console_scripts_start_from_the_installed_package(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    for tool in TOOLS:
        script = target / "bin" / tool
        assert script.exists(), tool
        started = subprocess.run([sys.executable, str(script), "--version"], capture_output=True, text=True,
                                 env=env, cwd=tmp_path, timeout=120)
        assert started.returncode == 0 and "(confidently)" in started.stdout, started.stderr
    where = subprocess.run([sys.executable, "-c", "import confidently_tools.advtrain as m; print(m.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert where.stdout.strip().startswith(str(target))
