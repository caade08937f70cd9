"""Per-record streaming with the house rules: order kept, shard honoured, bad records handled.

``stream_batches`` reads records, keeps this shard's, groups them into batches, runs
``process_batch(records) -> results`` (one dict or :class:`InvalidInput` per record) through
the chosen engine, and writes each result as soon as its batch (and everything before it)
is done. ``stream_records`` is the same with a per-record ``process(record) -> dict``.

A bad record stops the run with exit 3 after the finished records are flushed, or with
``--skip-invalid`` becomes ``{"id": ..., "error": ...}``. If nothing valid came out of a
non-empty input, the run ends with exit 4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confidently.cli.app import Common
from confidently.errors import InvalidInput, NoValidResult
from confidently.io.records import Record, RecordWriter, error_record
from confidently.run.console import progress

Result = dict[str, Any] | InvalidInput


def _locate(error: InvalidInput, record: Record) -> InvalidInput:
    return error.located(source=record.source, line=record.line, record_id=record.data.get("id"))


class _PerRecord:
    """Turns a per-record ``process`` into a batch function whose InvalidInput travels back as a value."""

    def __init__(self, process: Callable[[Record], dict[str, Any]]):
        self.process = process

    def __call__(self, batch: list[Record]) -> list[Result]:
        results: list[Result] = []
        for record in batch:
            try:
                results.append(self.process(record))
            except InvalidInput as exc:
                results.append(_locate(exc, record))
        return results


class _GuardedBatch:
    """Passes a reader's bad lines through and locates the errors a batch function reports."""

    def __init__(self, process_batch: Callable[[list[Record]], list[Result]]):
        self.process_batch = process_batch

    def __call__(self, batch: list[Record | InvalidInput]) -> list[Result]:
        records = [item for item in batch if isinstance(item, Record)]
        results = iter(self.process_batch(records) if records else [])
        out: list[Result] = []
        for item in batch:
            if isinstance(item, InvalidInput):
                out.append(item)
                continue
            result = next(results)
            out.append(_locate(result, item) if isinstance(result, InvalidInput) else result)
        return out


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_batches(records: Iterable[Record | InvalidInput], process_batch: Callable[[list[Record]], list[Result]],
                   common: Common, *, batch_size: int, writer: RecordWriter | None = None,
                   total: int | None = None, description: str = "records") -> tuple[int, int]:
    """Process records in batches and write one result per record, in input order; returns (valid, errors).

    ``records`` may contain :class:`InvalidInput` items (a reader's bad lines, see
    ``RecordReader(yield_errors=True)``); they are reported like records that fail to process.
    ``total`` (the input count, when known) sizes the progress bar shown on a terminal.
    """
    writer = writer or RecordWriter()
    engine = common.engine_instance()
    valid = errors = 0
    if total is not None and common.shard.count > 1:
        total = len(common.shard.positions(total))
    try:
        batches = _batches(common.shard.select(records), batch_size)
        results = (result for batch in engine.map(_GuardedBatch(process_batch), batches) for result in batch)
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


def stream_records(records: Iterable[Record | InvalidInput], process: Callable[[Record], dict[str, Any]],
                   common: Common, writer: RecordWriter | None = None, total: int | None = None,
                   description: str = "records") -> tuple[int, int]:
    """:func:`stream_batches` with a per-record ``process(record) -> dict``."""
    return stream_batches(records, _PerRecord(process), common, batch_size=1, writer=writer, total=total,
                          description=description)
