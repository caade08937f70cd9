"""Streaming JSONL records: one compact object per line, ids checked, order kept.

Readers report problems as :class:`~confidently.errors.InvalidInput` naming the source,
the 1-based line number and the field, so a tool can exit 3 with a message a person can
act on. Fields the reader does not know are passed through untouched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confidently.errors import InvalidInput, OutputClosed, UsageError

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
    stage keys its results and seeds by id. ``unique_by`` names fields that join the id in
    that key (``("method",)``: the same photo's records from several methods may share an id,
    the same (method, id) may not). A bad line raises :class:`InvalidInput`, or with
    ``yield_errors`` is yielded as one so the caller can report it and go on.
    """

    def __init__(self, source: str | os.PathLike | IO[str] = "-", *, require_image: bool = False,
                 validate: bool = True, yield_errors: bool = False, unique_by: tuple[str, ...] = (),
                 duplicate_hint: str = ""):
        self.require_image = require_image
        self.unique_by = tuple(unique_by)
        self.duplicate_hint = duplicate_hint  # what the person should do instead, added to a duplicate's message
        self.validate = validate
        self.yield_errors = yield_errors
        if isinstance(source, (str, os.PathLike)) and str(source) not in STDIN_NAMES:
            path = check_input_file(source, "records file")
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
            with open(self._path, "rb") as handle:
                yield from self._records(handle)
        elif self._stream is sys.stdin and hasattr(sys.stdin, "buffer"):
            yield from self._records(sys.stdin.buffer)  # bytes: bad UTF-8 is one bad line, whatever the locale
        else:
            yield from self._records(self._stream)

    def _records(self, lines: Iterable[str | bytes]) -> Iterator[Record | InvalidInput]:
        seen: set[str] = set()
        kind = binary_kind(lines.peek(16)[:16]) if hasattr(lines, "peek") else None
        if kind:
            raise InvalidInput(f"this is {kind}, not JSONL records; expected one JSON object per line",
                               source=self.name, line=1)
        for number, line in enumerate(lines, start=1):
            try:
                text = decode_line(line)
                if not text.strip():
                    continue
                record = self._parse(text, number, seen)
            except InvalidInput as exc:
                exc = exc.located(source=self.name, line=number)
                if not self.yield_errors:
                    raise exc from None
                yield exc
                continue
            yield record

    def _parse(self, line: str, number: int, seen: set[str]) -> Record:
        data = parse_json_line(line)
        if self.validate:
            problem = validate_image_record(data)
            if problem is None and self.require_image and "image" not in data:
                problem = ("image", "missing: expected an image path or tensor reference")
            if problem is not None:
                rid = data.get("id") if isinstance(data, dict) and problem[0] != "id" else None
                raise InvalidInput(problem[1], source=self.name, line=number, field=problem[0] or None,
                                   record_id=rid)
            key = data["id"] if not self.unique_by else \
                json.dumps([*(data.get(name) for name in self.unique_by), data["id"]], sort_keys=True)
            if key in seen:
                raise InvalidInput(self._duplicate(data), source=self.name, line=number, field="id",
                                   record_id=data["id"])
            seen.add(key)
        return Record(data, number, self.name, self.base_dir)

    def _duplicate(self, data: dict[str, Any]) -> str:
        hint = f": {self.duplicate_hint}" if self.duplicate_hint else ""
        if not self.unique_by:
            return f"duplicate id {json.dumps(data['id'])}; ids must be unique{hint}"
        names = ", ".join((*self.unique_by, "id"))
        values = ", ".join(json.dumps(data.get(name)) for name in (*self.unique_by, "id"))
        return f"duplicate ({names}) ({values}); each ({names}) must be unique{hint}"


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a readable file; a usage error (exit 2) saying what is wrong if not.

    For files named on the command line: a missing one is a usage error, unlike a file named inside
    a record (an image path), which is invalid input.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; expected a {what}")
    if not path.is_file():
        raise UsageError(f"no such file: {path} (expected a {what})")
    return path


BINARY_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                b"PK\x03\x04": "a zip archive", b"\x1f\x8b": "a gzip file"}


def binary_kind(head: bytes) -> str | None:
    """What kind of binary file starts with ``head`` (a safetensors file, an image...), or None for text."""
    for magic, kind in BINARY_MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) >= 10 and head[8:10] == b'{"' and 0 < int.from_bytes(head[:8], "little") < 1 << 40:
        return "a safetensors file"
    return None


def decode_line(line: str | bytes) -> str:
    """The line as text; bytes that are not UTF-8 (or a text stream's undecodable bytes) are an error."""
    if isinstance(line, str):
        if line.isascii() or _encodable(line):
            return line
        try:
            line = line.encode("utf-8", "surrogateescape")  # a text stream that kept bad bytes as surrogates
        except UnicodeEncodeError:
            line = line.encode("utf-8", "surrogatepass")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                           "expected JSON lines encoded in UTF-8") from None


MAX_DEPTH = 64  # deeper records are refused: json and every later stage recurse per level


def parse_json_line(line: str) -> Any:
    """One JSON value from one line, or :class:`InvalidInput` saying why not (without source and line).

    Refuses what would break a later stage: nesting deeper than ``MAX_DEPTH``, integers beyond
    Python's digit limit, and strings holding lone UTF-16 surrogates (``"\\ud800"``), which no
    UTF-8 output can carry.
    """
    if "\x00" in line:
        raise InvalidInput("binary data (a NUL byte); expected one JSON object per line")
    deep = InvalidInput(f"nested deeper than {MAX_DEPTH} levels; expected a JSON record of plain fields")
    try:
        data = json.loads(line)
    except RecursionError:
        raise deep from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON ({exc.msg} at column {exc.colno}); "
                           "expected one JSON object per line") from None
    except ValueError as exc:  # e.g. an integer longer than Python's int parsing limit
        raise InvalidInput(f"unreadable number ({str(exc).split(':')[0]}); expected one JSON object per line") \
            from None
    if line.count("[") + line.count("{") > MAX_DEPTH and _depth_exceeds(data, MAX_DEPTH):
        raise deep
    if "\\u" in line:
        bad = _surrogate_field(data)
        if bad is not None:
            raise InvalidInput("contains a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text; "
                               "expected valid Unicode", field=bad or None)
    return data


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (walked with a stack: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _surrogate_field(value: Any, top: str | None = None) -> str | None:
    """The top-level field holding a string that is not encodable as UTF-8 ("" for the line itself), or None."""
    stack = [(value, top)]
    while stack:
        item, name = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return name or ""
        elif isinstance(item, dict):
            for key, child in item.items():
                owner = name if name is not None else key
                if not _encodable(key):
                    return owner
                stack.append((child, owner))
        elif isinstance(item, list):
            stack.extend((child, name) for child in item)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    """Compact, strict JSON for one record that always encodes as UTF-8.

    NaN/inf become null (JSON has no such numbers); a string that is not valid Unicode (a lone
    surrogate, e.g. an undecodable byte kept by a text stream) is written as ``\\udXXX`` escapes.
    """
    try:
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if text.isascii() or _encodable(text):
        return text
    return json.dumps(_finite(record), separators=(",", ":"), ensure_ascii=True, allow_nan=False)


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


ROWS = "_rows"  # a field a job adds to a record for its collector only: never written


class Collector(RecordWriter):
    """Writes each record and keeps what ``keep(record)`` makes of it (``kept``; None keeps nothing): the
    per-record results a summary is computed from, or the rows of a tensor file, while the records
    themselves stream out. ``keep`` sees the record first and may take fields off it (:data:`ROWS`) or
    refuse it by raising :class:`InvalidInput`. ``hold`` keeps the records back until :meth:`release`
    (records that point into a tensor file are written once the file is).
    """

    def __init__(self, keep: Callable[[dict[str, Any]], Any] = lambda record: record,
                 stream: IO[str] | None = None, *, hold: bool = False):
        super().__init__(stream)
        self.keep = keep
        self.kept: list[Any] = []
        self.held: list[dict[str, Any]] | None = [] if hold else None

    def write(self, record: dict[str, Any]) -> None:
        value = self.keep(record)
        record.pop(ROWS, None)
        if self.held is not None:
            self.held.append(record)
        else:
            super().write(record)
        if value is not None:
            self.kept.append(value)

    def release(self) -> None:
        """Write the held records."""
        held, self.held = self.held or [], None
        self.write_all(held)


_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(record_id: str) -> str:
    """The file name every tool gives a record's outputs: the id itself when it is a safe name, else the id
    cleaned plus a short hash of it, so different ids never share a file."""
    stem = _UNSAFE_IN_NAMES.sub("_", record_id).strip("._") or "image"
    return stem if stem == record_id else f"{stem}-{hashlib.sha256(record_id.encode()).hexdigest()[:8]}"


def error_record(record_id: str | None, error: Exception | str) -> dict[str, Any]:
    """The ``{"id": ..., "error": ...}`` line ``--skip-invalid`` writes in place of a result."""
    message = error.describe() if isinstance(error, InvalidInput) else str(error)
    return {"id": record_id, "error": message}
