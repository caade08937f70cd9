"""Streaming JSONL records: one compact object per line, ids checked, order kept.

Readers report problems as :class:`~confidently.errors.InvalidInput` naming the source,
the 1-based line number and the field, so a tool can exit 3 with a message a person can
act on. Fields the reader does not know are passed through untouched.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confidently.errors import InvalidInput, OutputClosed

STDIN_NAMES = {"-", "<stdin>"}


@dataclass
class Record:
    """One input record with where it came from (for error messages and relative paths)."""

    data: dict[str, Any]
    line: int
    source: str
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def id(self) -> str:
        return self.data["id"]

    def error(self, message: str, field_name: str | None = None) -> InvalidInput:
        return InvalidInput(message, source=self.source, line=self.line, field=field_name,
                            record_id=self.data.get("id"))


def _check_tensor_ref(value: Any, name: str) -> str | None:
    if not isinstance(value, dict):
        return None if isinstance(value, str) and value else (
            "expected a path string or a tensor reference {\"tensors\": FILE, \"key\": KEY, \"index\": I}")
    if not isinstance(value.get("tensors"), str) or not value["tensors"]:
        return f"tensor reference needs \"tensors\": the path of a .safetensors file (in '{name}')"
    if not isinstance(value.get("key"), str) or not value["key"]:
        return f"tensor reference needs \"key\": the name of a tensor in {value['tensors']}"
    index = value.get("index")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        return "tensor reference \"index\" must be an integer >= 0"
    return None


def validate_image_record(data: Any) -> tuple[str, str] | None:
    """Check the fields the image-record schema owns; return (field, what was expected) or None.

    Hand-written rather than a generic JSON-Schema call so it costs microseconds per record
    and says what to change; tests check it agrees with ``schemas/image-record.schema.json``.
    """
    if not isinstance(data, dict):
        return "", "expected a JSON object per line"
    rid = data.get("id")
    if rid is None:
        return "id", "missing: every record needs a stable string \"id\""
    if not isinstance(rid, str) or not rid:
        return "id", f"expected a non-empty string, got {json.dumps(rid)} (quote numeric ids)"
    if "image" in data:
        problem = _check_tensor_ref(data["image"], "image")
        if problem:
            return "image", problem
    if "mask" in data:
        problem = _check_tensor_ref(data["mask"], "mask")
        if problem:
            return "mask", problem
    if "label" in data:
        label = data["label"]
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            return "label", f"expected an integer class index >= 0, got {json.dumps(label)}"
    if "split" in data and (not isinstance(data["split"], str) or not data["split"]):
        return "split", "expected a split name such as \"train\" or \"test\""
    return None


class RecordReader:
    """Iterate the records of a JSONL file or stream, validating ids and image fields.

    ``require_image`` makes ``image`` mandatory. Duplicate ids are refused: every later
    stage keys its results and seeds by id. A bad line raises :class:`InvalidInput`, or
    with ``yield_errors`` is yielded as one so the caller can report it and go on.
    """

    def __init__(self, source: str | os.PathLike | IO[str] = "-", *, require_image: bool = False,
                 validate: bool = True, yield_errors: bool = False):
        self.require_image = require_image
        self.validate = validate
        self.yield_errors = yield_errors
        if isinstance(source, (str, os.PathLike)) and str(source) not in STDIN_NAMES:
            path = Path(source)
            if not path.is_file():
                raise InvalidInput(f"no such file: {path}", source=str(path))
            self.name = str(path)
            self.base_dir = path.resolve().parent
            self._path: Path | None = path
            self._stream: IO[str] | None = None
        else:
            self.name = "<stdin>"
            self.base_dir = Path.cwd()
            self._path = None
            self._stream = sys.stdin if isinstance(source, (str, os.PathLike)) else source
            self.name = getattr(self._stream, "name", "<stdin>") if self._stream is not sys.stdin else "<stdin>"

    def __iter__(self) -> Iterator[Record]:
        if self._path is not None:
            with open(self._path, encoding="utf-8") as handle:
                yield from self._records(handle)
        else:
            yield from self._records(self._stream)

    def _records(self, lines: Iterable[str]) -> Iterator[Record | InvalidInput]:
        seen: set[str] = set()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = self._parse(line, number, seen)
            except InvalidInput as exc:
                if not self.yield_errors:
                    raise
                yield exc
                continue
            yield record

    def _parse(self, line: str, number: int, seen: set[str]) -> Record:
        try:
            data = json.loads(line.strip())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"malformed JSON ({exc.msg} at column {exc.colno}); "
                               "expected one JSON object per line", source=self.name, line=number) from None
        if self.validate:
            problem = validate_image_record(data)
            if problem is None and self.require_image and "image" not in data:
                problem = ("image", "missing: expected an image path or tensor reference")
            if problem is not None:
                raise InvalidInput(problem[1], source=self.name, line=number, field=problem[0] or None,
                                   record_id=data.get("id") if isinstance(data, dict) else None)
            if data["id"] in seen:
                raise InvalidInput(f"duplicate id {json.dumps(data['id'])}; ids must be unique",
                                   source=self.name, line=number, field="id", record_id=data["id"])
            seen.add(data["id"])
        return Record(data, number, self.name, self.base_dir)


def rebase_refs(data: dict[str, Any], old_base: Path, new_base: Path) -> dict[str, Any]:
    """A copy of ``data`` whose relative image/mask/tensor paths resolve the same from ``new_base``."""
    out = dict(data)
    for name in ("image", "mask"):
        ref = out.get(name)
        if isinstance(ref, str):
            out[name] = _rebase(ref, old_base, new_base)
        elif isinstance(ref, dict) and isinstance(ref.get("tensors"), str):
            out[name] = {**ref, "tensors": _rebase(ref["tensors"], old_base, new_base)}
    return out


def _rebase(path: str, old_base: Path, new_base: Path) -> str:
    if os.path.isabs(path):
        return path
    return os.path.relpath(os.path.normpath(old_base / path), new_base.resolve())


def read_records(source: str | os.PathLike | IO[str] = "-", **kwargs) -> Iterator[Record]:
    """Shorthand for ``iter(RecordReader(source, **kwargs))``."""
    return iter(RecordReader(source, **kwargs))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_record(record: dict[str, Any]) -> str:
    """Compact, strict JSON for one record (NaN/inf become null: JSON has no such numbers)."""
    try:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class RecordWriter:
    """Write one compact JSON line per record and flush it, so pipes see results as they come."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream if stream is not None else sys.stdout
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.stream.write(dumps_record(record) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed("stdout was closed by its reader") from None
        self.count += 1

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)


def error_record(record_id: str | None, error: Exception | str) -> dict[str, Any]:
    """The ``{"id": ..., "error": ...}`` line ``--skip-invalid`` writes in place of a result."""
    message = error.describe() if isinstance(error, InvalidInput) else str(error)
    return {"id": record_id, "error": message}
