"""Environment image files load at ``threads: 1`` (Mitsuba's EXR reader once hung forever on one Dr.Jit
thread). Each engine runs in a subprocess with a timeout, so a hang fails the test instead of blocking it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.render

RENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from confidently.render.engines import engine_class
    from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs, SceneState

    engine = engine_class(sys.argv[1])()
    for path in sys.argv[2:]:
        engine.load(ObjectSpec("ball", 1, builtin="sphere"), EnvironmentSpec("file", path=Path(path)),
                    RenderArgs(resolution=16, samples=2, threads=1))
        print(Path(path).suffix, float(engine.render(SceneState(), seed=0)["rgb"].mean()), flush=True)
""")


def run(*args: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[1:]} hung for {timeout} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def environment_files(tmp_path_factory):
    pytest.importorskip("mitsuba")
    folder = tmp_path_factory.mktemp("envs")
    run(textwrap.dedent("""
        import sys, numpy as np, mitsuba as mi
        mi.set_variant("scalar_rgb")
        sky = np.linspace(0.2, 0.9, 8 * 16 * 3, dtype=np.float32).reshape(8, 16, 3)
        for path in sys.argv[1:]:
            mi.Bitmap(sky).write(path)
    """), str(folder / "sky.exr"), str(folder / "sky.hdr"))
    return [str(folder / "sky.exr"), str(folder / "sky.hdr")]


@pytest.mark.parametrize("engine", ["mitsuba", "bpy"])
def test_exr_and_hdr_environments_load_on_one_thread(environment_files, engine):
    pytest.importorskip(engine if engine == "bpy" else "mitsuba")
    if engine == "mitsuba":
        from confidently.errors import MissingBackend
        from confidently.render.mitsuba_renderer import load_mitsuba

        try:
            load_mitsuba("cpu")
        except MissingBackend as exc:
            pytest.skip(str(exc))
    lines = run(RENDER, engine, *environment_files).split()
    assert lines[0::2] == [".exr", ".hdr"]
    assert all(0.05 < float(mean) < 1 for mean in lines[1::2]), lines  # the sky lights the frame
