"""The one place humans are spoken to: stderr, with progress only when someone watches."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")

console = Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False, log_path=False)
logger = logging.getLogger("confidently")


def configure_logging(verbosity: int = 0, quiet: bool = False) -> None:
    """-q shows errors only, default warnings and info, -v debug (tracebacks are the CLI's business)."""
    level = logging.ERROR if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.handlers[:] = [RichHandler(console=console, show_time=False, show_path=False, markup=True)]
    logger.setLevel(level)
    logger.propagate = False
    console.quiet = quiet


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


SUMMARY_AFTER_S = 5.0  # without a terminal, work that took longer says once what it did


def progress(items: Iterable[T], total: int | None = None, description: str = "working") -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr (rate and time left) when stderr is a terminal;
    otherwise, when the work took longer than a few seconds, one summary line at its end (``-q``: neither)."""
    if console.quiet:
        yield from items
        return
    if not stderr_is_terminal():
        started, count = time.perf_counter(), 0
        for item in items:
            count += 1
            yield item
        seconds = time.perf_counter() - started
        if seconds >= SUMMARY_AFTER_S:
            console.log(f"{description}: {count} in {seconds:.1f} s ({count / seconds:.3g}/s)")
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
