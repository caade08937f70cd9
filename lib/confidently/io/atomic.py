"""Atomic file writes (a reader sees the old file or the whole new one, never half of it), and the guard
that keeps a tool from writing over a file or folder it did not create (DESIGN rule 9)."""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from confidently.errors import UsageError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())  # mkstemp makes 0600; an output gets what open() would give it
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.cache
def new_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` gives a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_temporaries(path: str | os.PathLike, older_than: float) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left beside ``path`` when its process was killed.

    Only those last modified before ``older_than`` (a ``time.time()``, e.g. when this process started) go,
    so a write in progress in another process is left alone. Returns the files removed.
    """
    path = Path(path)
    removed = []
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if temporary.stat().st_mtime < older_than:
                temporary.unlink()
                removed.append(temporary)
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """A summary file: ``value`` as indented JSON and a newline, written atomically."""
    write_bytes_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


FOLDER_MARKER = ".confidently.json"


def written_by(path: str | os.PathLike) -> str | None:
    """The confidently tool that wrote ``path``, read from the file itself; None for anyone else's file.

    Safetensors files carry it in their metadata (``tool``, or ``training.tool`` for model files), JSON
    and JSON-lines outputs in a top-level ``tool`` field (a JSON array in its first element), PNG images in
    a ``tool`` text chunk, YAML files (a training's config, :mod:`confidently.io.run_config`) under
    ``confidently.tool``, folders in a marker file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / FOLDER_MARKER
    if path.suffix in (".yaml", ".yml"):
        return _yaml_tool(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
            if head == PNG_SIGNATURE:
                tool = _png_text(handle, b"tool")
            elif 0 < header_len < 100_000_000 and not head.lstrip().startswith((b"{", b"[")):
                text = handle.read(header_len)
                metadata = json.loads(text).get("__metadata__") or {}
                tool = _decoded(metadata.get("tool")) or (_decoded(metadata.get("training")) or {}).get("tool")
            else:
                handle.seek(0)
                text = handle.read(4_000_000)
                try:
                    first = json.loads(text.split(b"\n", 1)[0])
                except ValueError:
                    first = json.loads(text)
                if isinstance(first, list) and first:  # a JSON array of records: its first record's
                    first = first[0]
                tool = first.get("tool")
    except (OSError, ValueError, AttributeError):
        return None
    return tool if isinstance(tool, str) else None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _yaml_tool(path: Path) -> str | None:
    import yaml

    try:
        with open(path, "rb") as handle:
            loaded = yaml.safe_load(handle.read(4_000_000))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    block = loaded.get("confidently") if isinstance(loaded, dict) else None
    tool = block.get("tool") if isinstance(block, dict) else None
    return tool if isinstance(tool, str) else None


def _png_text(handle: IO[bytes], key: bytes) -> str | None:
    """The value of a PNG ``tEXt`` chunk named ``key`` among those before the image data."""
    while len(chunk := handle.read(8)) == 8 and chunk[4:] not in (b"IDAT", b"IEND"):
        data = handle.read(int.from_bytes(chunk[:4], "big"))
        handle.read(4)  # CRC
        name, _, value = data.partition(b"\0")
        if chunk[4:] == b"tEXt" and name == key:
            return value.decode("latin-1")
    return None


def _decoded(value: Any) -> Any:
    """A safetensors metadata value: JSON-encoded by confidently, a plain string by others."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def guard_output(path: str | os.PathLike | None, tool: str, *, force: bool, flag: str = "--force") -> None:
    """Refuse (exit 2) to replace an existing file or folder ``tool`` did not write, unless the user forces it.

    An empty file or folder is not refused: replacing it loses nothing (and an empty output, e.g. no
    poisoned ids, has nowhere to name its tool).

    Call it before the work starts, so a long run does not end in a refusal.
    """
    if path is None or force:
        return
    path = Path(path)
    empty = not any(path.iterdir()) if path.is_dir() else path.is_file() and path.stat().st_size == 0
    if not path.exists() or empty or written_by(path) == tool:
        return
    what = "folder" if path.is_dir() else "file"
    raise UsageError(f"{path}: an existing {what} that {tool} did not write; choose another name or pass {flag} "
                     "to write over it")


def claim_folder(path: str | os.PathLike, tool: str, *, force: bool, flag: str = "--force") -> dict[str, Any]:
    """Make ``path`` an output folder of ``tool`` and return its marker (``files``: what the tool wrote last time).

    A missing or empty folder, or one ``tool`` made before, is claimed; anyone else's non-empty folder is
    refused unless forced, and even then the marker lists only the tool's own files, so a later run never
    removes the user's.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file, not a folder; choose another name")
    guard_output(path, tool, force=force, flag=flag)
    marker = path / FOLDER_MARKER
    previous: dict[str, Any] = {}
    if written_by(path) == tool:
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(marker.read_text())
    path.mkdir(parents=True, exist_ok=True)
    if not previous:
        previous = {"tool": tool, "files": []}
        write_bytes_atomic(marker, (json.dumps(previous) + "\n").encode())
    return previous


def record_folder_files(path: str | os.PathLike, tool: str, files: list[str]) -> None:
    """Rewrite ``path``'s marker to list the files (relative names) ``tool`` owns there now."""
    write_bytes_atomic(Path(path) / FOLDER_MARKER, (json.dumps({"tool": tool, "files": sorted(files)}) + "\n").encode())
