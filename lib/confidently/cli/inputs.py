"""The stdin rule: input from a FILE argument or ``-``/stdin; a terminal on stdin is a usage error."""

from __future__ import annotations

import sys

from confidently.errors import UsageError


def input_source(value: str | None, what: str = "records") -> str:
    """``value`` or ``-``; refuses to wait on a terminal (prints usage, exit 2)."""
    source = value or "-"
    if source == "-" and sys.stdin.isatty():
        raise UsageError(f"no input: give a FILE or pipe {what} on stdin")
    return source
