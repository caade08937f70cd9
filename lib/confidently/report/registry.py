"""The report's sections, registered by name: a :class:`Section` claims records by their shape and draws
them as :class:`Block` s. A leaf module, so sections and the site import it and not each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confidently.registry import Registry


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
    """``fields(record)`` maps the dotted paths a section reads to the kind each must be (see ``check_fields``)."""

    name: str
    title: str
    claims: Callable[[dict[str, Any]], bool]
    draw: Callable[[list[dict[str, Any]], Path], list[Block]]
    fields: Callable[[dict[str, Any]], dict[str, str]] | None = None


SECTIONS: Registry[Section] = Registry("report section")


def register_section(name: str, title: str, claims: Callable[[dict[str, Any]], bool],
                     fields: Callable[[dict[str, Any]], dict[str, str]] | None = None):
    def wrap(draw: Callable[[list[dict[str, Any]], Path], list[Block]]):
        SECTIONS.register(name)(Section(name, title, claims, draw, fields))
        return draw

    return wrap
