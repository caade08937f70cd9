"""Errors that map onto the documented exit codes.

The library raises these; the shared CLI skeleton turns them into one line on stderr and
the matching exit code (see DESIGN.md): ``InvalidInput`` → 3, ``UsageError`` → 2,
``NoValidResult`` → 4. Anything else is a runtime failure (1).
"""

from __future__ import annotations


class ConfidentlyError(Exception):
    """Base class of every error the library raises on purpose."""

    exit_code = 1


class UsageError(ConfidentlyError):
    """The command line or configuration asks for something that cannot be done."""

    exit_code = 2


class InvalidInput(ConfidentlyError):
    """An input record, file or tensor is not what it must be.

    ``source`` names the file (or ``<stdin>``), ``line`` the 1-based line number,
    ``field`` the offending field; the message says what was expected.
    """

    exit_code = 3

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None, record_id: str | None = None):
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.record_id = record_id
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.source:
            where.append(self.source if self.line is None else f"{self.source}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def located(self, *, source: str | None = None, line: int | None = None,
                record_id: str | None = None) -> InvalidInput:
        """The same error with the record's location filled in where it was missing."""
        return InvalidInput(self.message, source=self.source or source,
                            line=self.line if self.line is not None else line,
                            field=self.field, record_id=self.record_id or record_id)


class NoValidResult(ConfidentlyError):
    """The run finished but produced no valid result, or a ``--fail-under`` gate failed."""

    exit_code = 4


class OutputClosed(ConfidentlyError):
    """The reader of stdout went away (e.g. ``| head``): stop quietly, nothing is wrong."""

    exit_code = 0


class MissingBackend(ConfidentlyError):
    """An optional backend (a package from an extra, or a simulator to talk to) is not available.

    Exit code 3, like invalid input: the run cannot start with what this machine has; the message
    says what to install or start.
    """

    exit_code = 3
