"""Reading records of any tool, routing them to the section that draws them, and writing the site.

A section claims records by their shape (``tool``/``kind`` fields or the key a tool writes its results
under) and returns blocks: figures (PNG files) and tables. The site is drawn in a temporary folder and then
moved into place file by file, so a failed run never leaves half a site; report replaces only the files
it wrote before (listed in the folder's marker), never anyone else's.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from confidently import __version__
from confidently.errors import InvalidInput, NoValidResult, UsageError
from confidently.io.atomic import claim_folder, record_folder_files
from confidently.io.records import binary_kind, check_input_file, decode_line, parse_json_line
from confidently.report.registry import SECTIONS, Block, Section, register_section  # noqa: F401 (the site's API)

REPORT_TOOL = "report"


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def check_fields(record: dict[str, Any], spec: dict[str, str]) -> tuple[str, str] | None:
    """The first (field, what was expected) that ``record`` gets wrong, or None.

    ``spec`` maps dotted paths (``*`` for every key or item) to a kind in ``KINDS``; a trailing ``?``
    allows the field to be missing or null. Paths whose parent is absent are not checked.
    """
    for path, kind in spec.items():
        optional = kind.endswith("?")
        accepts, expected = KINDS[kind.rstrip("?")]
        parts = path.split(".")
        located: list[tuple[str, Any]] = [("", record)]
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            step: list[tuple[str, Any]] = []
            for where, value in located:
                if part == "*":
                    items = value.items() if isinstance(value, dict) else \
                        enumerate(value) if isinstance(value, list) else ()
                    step += [(f"{where}.{key}" if where else str(key), child) for key, child in items]
                elif isinstance(value, dict) and (part in value or last):
                    step.append((f"{where}.{part}" if where else part, value.get(part, _MISSING)))
            located = step
        for where, value in located:
            if value is _MISSING or value is None:
                if not optional:
                    return where, f"missing: expected {expected}"
            elif not accepts(value):
                return where, f"expected {expected}, got {json.dumps(value)[:40]}"
    return None


_MISSING = object()


def list_sections() -> list[str]:
    _load_sections()
    return list(SECTIONS)


def _load_sections() -> None:
    from confidently.report.sections import (  # noqa: F401
        ablate,
        advtrain,
        certify,
        immunize,
        influence,
        plant_backdoor,
        render_3db,
        training,
        unadv_patch,
    )


def classify(record: dict[str, Any]) -> str | None:
    """The section that draws ``record``, or None."""
    _load_sections()
    for name, section in SECTIONS.items():
        if section.claims(record):
            return name
    return None


def read_records(source: str | os.PathLike | IO, name: str,
                 on_invalid: Callable[[InvalidInput], None] | None = None) -> list[dict[str, Any]]:
    """JSON lines, or one JSON document (a pretty-printed summary file), checked against the sections' fields.

    A bad line (not UTF-8, not a JSON object, a field of the wrong kind) raises :class:`InvalidInput`
    naming the line and field, or with ``on_invalid`` is handed to it and left out.
    """
    if hasattr(source, "read"):
        data = source.read()
    else:
        data = check_input_file(source, "JSON records or summary file").read_bytes()
    if isinstance(data, bytes) and binary_kind(data[:16]):
        raise InvalidInput(f"this is {binary_kind(data[:16])}, not records; expected JSON lines or one JSON "
                           "document", source=name, line=1)
    lines = data.split(b"\n" if isinstance(data, bytes) else "\n")
    records: list[tuple[int, Any]] = []
    errors: list[InvalidInput] = []
    for number, line in enumerate(lines, start=1):
        try:
            text = decode_line(line)
            if text.strip():
                records.append((number, parse_json_line(text)))
        except InvalidInput as exc:
            errors.append(exc.located(source=name, line=number))
    if errors and len(records) + len(errors) > 1:
        whole = _whole_document(lines)
        if whole is not None:
            records, errors = whole, []
    kept = []
    for number, value in records:
        problem = ("", "expected a JSON object per line") if not isinstance(value, dict) else _field_problem(value)
        if problem is None:
            kept.append(value)
        else:
            errors.append(InvalidInput(problem[1], source=name, line=number, field=problem[0] or None))
    errors.sort(key=lambda error: error.line or 0)
    if errors and on_invalid is None:
        raise errors[0]
    for error in errors:
        on_invalid(error)
    return kept


def _whole_document(lines: list) -> list[tuple[int, Any]] | None:
    """The records of a file that is one JSON document (an object, or a list of them), all at line 1; else None."""
    try:
        text = "\n".join(decode_line(line) for line in lines)
        whole = parse_json_line(text)
    except InvalidInput:
        return None
    return [(1, item) for item in (whole if isinstance(whole, list) else [whole])]


def _field_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    name = classify(record)
    section = SECTIONS.get(name) if name else None
    return check_fields(record, section.fields(record)) if section and section.fields else None


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _publish(staging: Path, out: Path, owned: set[str], force: bool) -> None:
    """Move the staged site into ``out``, replacing only files report wrote there before (listed in the
    folder's marker): the user's files, such as the records the report was drawn from, stay."""
    new = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    clash = next((name for name in new if name not in owned and (out / name).exists()), None)
    if clash is not None and not force:
        raise UsageError(f"{out / clash} exists and report did not write it; move it away or pass --force to "
                         "write over it")
    for name in new:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)
    for name in sorted(owned - set(new)):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
        with contextlib.suppress(OSError):  # the section folder, once empty of report's figures
            (out / name).parent.rmdir()
    record_folder_files(out, REPORT_TOOL, new)


def build_site(records: Iterable[dict[str, Any]], out: str | os.PathLike, title: str = "confidently report",
               inputs: list[str] | None = None, force: bool = False) -> tuple[dict[str, int], int]:
    """Draw every section that has records into ``out`` (PNG files + index.html); returns
    ({section: records drawn}, records skipped). Raises :class:`NoValidResult` when nothing was drawn, and
    :class:`UsageError` when ``out`` holds files report did not write and ``force`` is false."""
    import jinja2

    _load_sections()
    grouped: dict[str, list[dict[str, Any]]] = {}
    skipped = 0
    for record in records:
        name = classify(record)
        if name is None:
            skipped += 1
        else:
            grouped.setdefault(name, []).append(record)
    if not grouped:
        raise NoValidResult(f"no record of a kind report draws ({skipped} skipped); it reads the output of "
                            f"{', '.join(list_sections())}")
    out = Path(out)
    previous = claim_folder(out, REPORT_TOOL, force=force)
    staging = Path(tempfile.mkdtemp(prefix=".report-staging-", dir=out))
    try:
        sections = []
        for name, section in SECTIONS.items():
            if name not in grouped:
                continue
            folder = staging / name
            folder.mkdir()
            blocks = section.draw(grouped[name], folder)
            for block in blocks:
                if block.image:
                    block.image = f"{name}/{block.image}"
            sections.append({"name": name, "title": section.title, "count": len(grouped[name]), "blocks": blocks})
        environment = jinja2.Environment(loader=jinja2.PackageLoader("confidently.report", "templates"),
                                         autoescape=jinja2.select_autoescape(["html", "j2"]))
        environment.filters["embed"] = lambda image: _embed(staging / image)
        html = environment.get_template("index.html.j2").render(
            title=title, sections=sections, inputs=inputs or [], version=__version__, skipped=skipped,
            created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"))
        (staging / "index.html").write_text(html)
        _publish(staging, out, set(previous.get("files", [])), force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: len(rows) for name, rows in grouped.items()}, skipped
