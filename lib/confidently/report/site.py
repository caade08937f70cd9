"""Reading records of any tool, routing them to the section that draws them, and writing the site.

A section claims records by their shape (``tool``/``kind`` fields or the key a tool writes its results
under) and returns blocks: figures (PNG files) and tables. The site is written to a temporary folder
and renamed into place, so a failed run never leaves half a site.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confidently import __version__
from confidently.errors import InvalidInput, NoValidResult


@dataclass
class Block:
    """One thing on the page: a figure (``image`` file name in the site) or a table (``rows``)."""

    title: str
    caption: str = ""
    image: str | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    claims: Callable[[dict[str, Any]], bool]
    draw: Callable[[list[dict[str, Any]], Path], list[Block]]


_SECTIONS: dict[str, Section] = {}


def register_section(name: str, title: str, claims: Callable[[dict[str, Any]], bool]):
    def wrap(draw: Callable[[list[dict[str, Any]], Path], list[Block]]):
        _SECTIONS[name] = Section(name, title, claims, draw)
        return draw

    return wrap


def list_sections() -> list[str]:
    _load_sections()
    return list(_SECTIONS)


def _load_sections() -> None:
    from confidently.report.sections import (  # noqa: F401
        ablate,
        advtrain,
        certify,
        immunize,
        influence,
        plant_backdoor,
        render_3db,
        unadv_patch,
    )


def classify(record: dict[str, Any]) -> str | None:
    """The section that draws ``record``, or None."""
    _load_sections()
    for name, section in _SECTIONS.items():
        if section.claims(record):
            return name
    return None


def read_records(source: str | os.PathLike | IO[str], name: str) -> list[dict[str, Any]]:
    """JSON lines, or one JSON document (a pretty-printed summary file)."""
    text = source.read() if hasattr(source, "read") else Path(source).read_text()
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            try:
                whole = json.loads(text)
            except json.JSONDecodeError:
                raise InvalidInput(f"not JSON ({exc.msg})", source=name, line=line_number) from None
            return [whole] if isinstance(whole, dict) else list(whole)
        if not isinstance(value, dict):
            raise InvalidInput("expected a JSON object per line", source=name, line=line_number)
        records.append(value)
    return records


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def build_site(records: Iterable[dict[str, Any]], out: str | os.PathLike, title: str = "confidently report",
               inputs: list[str] | None = None) -> tuple[dict[str, int], int]:
    """Draw every section that has records into ``out`` (PNG files + index.html); returns
    ({section: records drawn}, records skipped). Raises :class:`NoValidResult` when nothing was drawn."""
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
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        sections = []
        for name, section in _SECTIONS.items():
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
        if out.exists():
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {name: len(rows) for name, rows in grouped.items()}, skipped
