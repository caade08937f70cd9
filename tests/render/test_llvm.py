"""Which libLLVM Dr.Jit gets for Mitsuba's llvm_ad_rgb: found by version, pointed at before drjit's import, and an
older one refused with the fix (exit 3) instead of the process aborting in its first kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from confidently.errors import MissingBackend
from confidently.render import llvm

LISTING = """4 libs found in cache `/etc/ld.so.cache'
\tlibLLVM-15.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libLLVM-15.so.1
\tlibLLVM.so.19.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libLLVM.so.19.1
\tlibLLVMgold.so (libc6,x86-64) => /usr/lib/llvm-14/lib/LLVMgold.so
\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6
"""


@pytest.mark.parametrize(("name", "major"), [("libLLVM-15.so.1", 15), ("libLLVM-15.so", 15),
                                             ("libLLVM-14.0.6.so.1", 14), ("libLLVM.so.19.1", 19),
                                             ("libLLVM.so.20", 20), ("LLVMgold.so", None),
                                             ("libLLVMAArch64AsmParser.a", None)])
def test_versions_are_read_off_library_names(name, major):
    assert llvm.llvm_major(f"/usr/lib/x86_64-linux-gnu/{name}") == major


def test_a_bare_libllvm_so_is_versioned_by_its_link_target(tmp_path):
    (tmp_path / "libLLVM-14.so").write_bytes(b"")
    (tmp_path / "libLLVM.so").symlink_to("libLLVM-14.so")
    assert llvm.llvm_major(tmp_path / "libLLVM.so") == 14


def test_ldconfig_listing_yields_the_llvm_paths():
    assert llvm.ldconfig_paths(LISTING) == ["/lib/x86_64-linux-gnu/libLLVM-15.so.1",
                                            "/lib/x86_64-linux-gnu/libLLVM.so.19.1",
                                            "/usr/lib/llvm-14/lib/LLVMgold.so"]


def test_llvm_19_is_preferred_and_older_ones_are_never_used():
    assert llvm.usable_llvm({14: "a", 15: "b"}) is None
    assert llvm.usable_llvm({15: "b", 19: "c", 20: "d"}) == "c"
    assert llvm.usable_llvm({15: "b", 20: "d"}) == "d"


def test_drjit_is_pointed_at_llvm_19_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(llvm, "installed_llvm", lambda: {15: "/lib/libLLVM-15.so.1", 19: "/lib/libLLVM.so.19.1"})
    monkeypatch.delitem(sys.modules, "drjit", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(llvm.ENV, "recorded")  # so that teardown restores what the process had, not our choice
    monkeypatch.delenv(llvm.ENV)
    llvm.point_drjit_at_llvm()
    assert os.environ[llvm.ENV] == "/lib/libLLVM.so.19.1"
    monkeypatch.setenv(llvm.ENV, "/opt/mine/libLLVM.so")
    llvm.point_drjit_at_llvm()
    assert os.environ[llvm.ENV] == "/opt/mine/libLLVM.so"


def test_only_older_llvm_is_a_missing_backend_naming_the_fix(monkeypatch):
    monkeypatch.setattr(llvm, "installed_llvm", lambda: {14: "/lib/libLLVM-14.so.1", 15: "/lib/libLLVM-15.so.1"})
    monkeypatch.delenv(llvm.ENV, raising=False)
    with pytest.raises(MissingBackend, match=r"needs libLLVM 19 \(found 14, 15\): apt-get install libllvm19"):
        llvm.require_llvm(15)
    monkeypatch.setenv(llvm.ENV, "/lib/libLLVM-15.so.1")
    with pytest.raises(MissingBackend, match="loaded LLVM 15 from DRJIT_LIBLLVM_PATH=/lib/libLLVM-15.so.1"):
        llvm.require_llvm(15)
    llvm.require_llvm(19)


def test_installed_llvm_is_looked_up_once_per_process():
    llvm.installed_llvm()
    assert llvm.installed_llvm.cache_info().currsize == 1


def older_llvm_dir(tmp_path):
    """A folder holding only a link to an LLVM older than 19, as on the user's fresh machine."""
    older = {major: path for major, path in llvm.installed_llvm().items() if 15 <= major < llvm.REQUIRED_MAJOR}
    if not older:
        pytest.skip("no LLVM 15..18 on this machine to stand for the old one Dr.Jit would load")
    major = min(older)
    folder = tmp_path / "old-llvm"
    folder.mkdir()
    (folder / f"libLLVM-{major}.so.1").symlink_to(older[major])
    return folder / f"libLLVM-{major}.so.1", major


@pytest.mark.render
def test_texture_tool_with_an_older_llvm_exits_3_instead_of_aborting(run_tool, tmp_path, monkeypatch):
    pytest.importorskip("mitsuba")
    from confidently.models import create_model, save_model

    library, major = older_llvm_dir(tmp_path)
    save_model(create_model("tiny_resnet", 4, classes=list("abcd")), tmp_path / "model.safetensors")
    monkeypatch.setenv(llvm.ENV, str(library))
    result = run_tool("unadv-patch", "texture", "--model", "model.safetensors", "--mesh", "builtin:cube",
                      "--class-id", "1", "--tex-size", "4", "--steps", "1", "--out", "tex.safetensors")
    assert result.returncode == 3, result.stderr
    assert "LLVM ERROR" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert f"needs libLLVM 19, but Dr.Jit loaded LLVM {major} from DRJIT_LIBLLVM_PATH" in result.stderr
    assert not (tmp_path / "tex.safetensors").exists()


@pytest.mark.render
def test_render_3db_engine_goes_through_the_same_check(tmp_path):
    pytest.importorskip("mitsuba")
    library, major = older_llvm_dir(tmp_path)
    script = textwrap.dedent("""
        from confidently.errors import MissingBackend
        from confidently.render.engines import engine_class
        from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs
        try:
            engine_class("mitsuba")().load(ObjectSpec("cube", 0, builtin="cube"), EnvironmentSpec("w", solid=(1, 1, 1)),
                                           RenderArgs(resolution=8, samples=1))
        except MissingBackend as exc:
            print(exc)
    """)
    env = {**os.environ, llvm.ENV: str(library)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"Dr.Jit loaded LLVM {major}" in proc.stdout
