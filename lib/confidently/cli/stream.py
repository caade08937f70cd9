"""Per-record streaming with the house rules: order kept, shard honoured, bad records handled.

``stream_records`` reads records, keeps this shard's, runs ``process(record) -> dict``
through the chosen engine, and writes each result as soon as it (and everything before it)
is done. A bad record stops the run with exit 3 after the finished records are flushed, or
with ``--skip-invalid`` becomes ``{"id": ..., "error": ...}``. If nothing valid came out
of a non-empty input, the run ends with exit 4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confidently.cli.app import Common
from confidently.errors import InvalidInput, NoValidResult
from confidently.io.records import Record, RecordWriter, error_record
from confidently.run.console import progress


class _Guarded:
    """Wraps ``process`` so a record's InvalidInput travels back as a value (engines stay simple)."""

    def __init__(self, process: Callable[[Record], dict[str, Any]]):
        self.process = process

    def __call__(self, record: Record | InvalidInput) -> dict[str, Any] | InvalidInput:
        if isinstance(record, InvalidInput):
            return record
        try:
            return self.process(record)
        except InvalidInput as exc:
            return exc.located(source=record.source, line=record.line, record_id=record.data.get("id"))


def stream_records(records: Iterable[Record | InvalidInput], process: Callable[[Record], dict[str, Any]],
                   common: Common, writer: RecordWriter | None = None, total: int | None = None,
                   description: str = "records") -> tuple[int, int]:
    """Process and write records; returns (valid results, errors).

    ``records`` may contain :class:`InvalidInput` items (a reader's bad lines, see
    ``RecordReader(yield_errors=True)``); they are reported like records that fail to process.
    ``total`` (the input count, when known) sizes the progress bar shown on a terminal.
    """
    writer = writer or RecordWriter()
    engine = common.engine_instance()
    valid = errors = 0
    try:
        if total is not None and common.shard.count > 1:
            total = len(range(common.shard.index, total, common.shard.count))
        results = engine.map(_Guarded(process), common.shard.select(records))
        for result in progress(results, total, description):
            if isinstance(result, InvalidInput):
                if not common.skip_invalid:
                    raise result
                writer.write(error_record(result.record_id, result))
                errors += 1
                continue
            writer.write(result)
            valid += 1
    finally:
        engine.close()
    if errors and not valid:
        raise NoValidResult(f"all {errors} records were invalid")
    return valid, errors
