"""Which libLLVM Dr.Jit uses for Mitsuba's CPU variant (``llvm_ad_rgb``).

Dr.Jit loads the first libLLVM it finds when ``drjit`` is imported, and Mitsuba 3.9's kernels need
LLVM 19: with an older one the process aborts in its first kernel (``LLVM ERROR: Cannot select: ...
fminimum``), which no ``except`` can catch. So before drjit is first imported, ``DRJIT_LIBLLVM_PATH``
is pointed at an LLVM 19 found on this machine (unless the user set it), and after the import the
version Dr.Jit actually loaded is checked, turning an older one into a :class:`MissingBackend`.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from confidently.errors import MissingBackend

REQUIRED_MAJOR = 19
ENV = "DRJIT_LIBLLVM_PATH"
SEARCH_GLOBS = ("/usr/lib/llvm-*/lib/libLLVM*.so*", "/usr/lib/*-linux-gnu/libLLVM*.so*",
                "/lib/*-linux-gnu/libLLVM*.so*")
INSTALL_HINT = f"apt-get install libllvm{REQUIRED_MAJOR}"
# libLLVM-15.so, libLLVM-15.so.1, libLLVM-14.0.6.so (Debian) and libLLVM.so.19.1 (LLVM >= 18's own soname)
VERSIONED_NAME = re.compile(r"libLLVM(?:-(\d+)(?:\.\d+)*\.so(?:\.\d+)*|\.so\.(\d+)(?:\.\d+)*)")


def llvm_major(path: str | os.PathLike) -> int | None:
    """The LLVM major version a library file name says, following a bare ``libLLVM.so`` link to its target."""
    for name in (Path(path).name, Path(os.path.realpath(path)).name):
        match = VERSIONED_NAME.fullmatch(name)
        if match:
            return int(match.group(1) or match.group(2))
    return None


def ldconfig_paths(listing: str) -> list[str]:
    """The libLLVM paths in ``ldconfig -p`` output (lines ``libLLVM-15.so.1 (libc6,x86-64) => /lib/...``)."""
    return [line.rsplit("=>", 1)[1].strip() for line in listing.splitlines()
            if "libLLVM" in line and "=>" in line]


def _ldconfig_listing() -> str:
    command = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        return subprocess.run([command, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.cache
def installed_llvm() -> dict[int, str]:
    """Major version → one library file, from the loader's cache and the usual Debian/Ubuntu folders (cached)."""
    candidates = ldconfig_paths(_ldconfig_listing())
    for pattern in SEARCH_GLOBS:
        candidates += sorted(glob.glob(pattern))
    found: dict[int, str] = {}
    for path in candidates:
        major = llvm_major(path)
        if major is not None and os.path.isfile(path):
            found.setdefault(major, path)
    return found


def usable_llvm(found: dict[int, str]) -> str | None:
    """The library for Dr.Jit: LLVM 19 when present (what Mitsuba is built against), else the oldest newer one."""
    usable = sorted(major for major in found if major >= REQUIRED_MAJOR)
    return found[usable[0]] if usable else None


def point_drjit_at_llvm() -> None:
    """Set ``DRJIT_LIBLLVM_PATH`` to an LLVM 19 before drjit is first imported, unless the user has set it."""
    if ENV in os.environ or "drjit" in sys.modules or not sys.platform.startswith("linux"):
        return
    path = usable_llvm(installed_llvm())
    if path is not None:
        os.environ[ENV] = path


def require_llvm(loaded_major: int) -> None:
    """Refuse, with the fix, an LLVM older than 19 (``loaded_major`` is Dr.Jit's ``llvm_version()[0]``, -1 for none)."""
    if loaded_major >= REQUIRED_MAJOR:
        return
    need = f"mitsuba's llvm_ad_rgb needs libLLVM {REQUIRED_MAJOR}"
    loaded = f"LLVM {loaded_major}" if loaded_major > 0 else "no LLVM"
    if ENV in os.environ:
        raise MissingBackend(f"{need}, but Dr.Jit loaded {loaded} from {ENV}={os.environ[ENV]}: point it at "
                             f"libLLVM {REQUIRED_MAJOR} ({INSTALL_HINT}) or unset it")
    found = installed_llvm()
    usable = usable_llvm(found)
    if usable is not None:  # drjit was imported before confidently could point it at the right one
        raise MissingBackend(f"{need}, but Dr.Jit was imported first and loaded {loaded}: set {ENV}={usable} "
                             "before starting Python")
    versions = ", ".join(str(major) for major in sorted(found)) or "none"
    raise MissingBackend(f"{need} (found {versions}): {INSTALL_HINT} (or `make llvm`), or set {ENV}")
