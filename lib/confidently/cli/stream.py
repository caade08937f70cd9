"""Per-record streaming with the house rules: order kept, shard honoured, bad records handled.

``stream_batches`` reads records, keeps this shard's, groups them into batches, runs
``process_batch(records) -> results`` (one dict or :class:`InvalidInput` per record) through
the chosen engine, and writes each result as soon as its batch (and everything before it)
is done. ``stream_records`` is the same with a per-record ``process(record) -> dict``.

Given ``load(record)`` (decoding an image, say), records are loaded ahead of the batch that needs
them by a few threads (image decoding and resizing release the GIL), in input order and with a
bounded number in flight, so the cores decode while the model computes.

A bad record stops the run with exit 3 after the finished records are flushed, or with
``--skip-invalid`` becomes ``{"id": ..., "error": ...}``. If nothing valid came out of a
non-empty input, the run ends with exit 4.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

from confidently.cli.app import Common
from confidently.errors import InvalidInput, NoValidResult
from confidently.io.records import Record, RecordWriter, error_record
from confidently.run.console import progress

Result = dict[str, Any] | InvalidInput


def _locate(error: InvalidInput, record: Record) -> InvalidInput:
    return error.located(source=record.source, line=record.line, record_id=record.data.get("id"))


class _Loaded(NamedTuple):
    record: Record
    value: Any


def _load_item(load: Callable[[Record], Any], item: Record | InvalidInput) -> _Loaded | InvalidInput:
    """A record with what ``load`` made of it, or its located error; a reader's bad line as it is."""
    if isinstance(item, InvalidInput):
        return item
    try:
        return _Loaded(item, load(item))
    except InvalidInput as exc:
        return _locate(exc, item)


def _load_threads(workers: int | None) -> int:
    """Threads that load records: ``--workers``, else as many as the data layer's default for files (at least 1)."""
    if workers is not None:
        return workers
    return max(1, min(4, (os.cpu_count() or 1) - 1))


class _ReadAhead:
    """``load`` applied to a stream of records by ``threads`` threads, results in input order.

    At most ``ahead`` records are submitted and not yet handed on, so memory stays bounded whatever
    the input's size; ``threads=0`` loads each record in the calling thread when it is asked for.
    :meth:`close` cancels the loads not started yet, so an error or Ctrl-C downstream does not wait
    for them.
    """

    def __init__(self, items: Iterable[Record | InvalidInput], load: Callable[[Record], Any], threads: int,
                 ahead: int):
        self.items, self.load, self.ahead = items, load, max(1, ahead)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="confidently-load") if threads > 0 else None
        self.pending: deque[Future] = deque()

    def __iter__(self) -> Iterator[_Loaded | InvalidInput]:
        if self.pool is None:
            for item in self.items:
                yield _load_item(self.load, item)
            return
        for item in self.items:
            self.pending.append(self.pool.submit(_load_item, self.load, item))
            if len(self.pending) >= self.ahead:
                yield self.pending.popleft().result()
        while self.pending:
            yield self.pending.popleft().result()

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


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
    """Passes bad items through, runs the batch function on the rest and locates the errors it reports.

    ``loaded``: the items are ``(record, value)`` pairs and the batch function takes ``(records, values)``;
    ``load``: the items are records to load here first (on the engine's worker, for engines other than serial).
    """

    def __init__(self, process_batch: Callable[..., list[Result]], loaded: bool = False,
                 load: Callable[[Record], Any] | None = None):
        self.process_batch, self.loaded, self.load = process_batch, loaded or load is not None, load

    def __call__(self, batch: list[Any]) -> list[Result]:
        if self.load is not None:
            batch = [_load_item(self.load, item) for item in batch]
        good = [item for item in batch if not isinstance(item, InvalidInput)]
        if not good:
            return batch
        if self.loaded:
            results = iter(self.process_batch([item.record for item in good], [item.value for item in good]))
        else:
            results = iter(self.process_batch(good))
        out: list[Result] = []
        for item in batch:
            if isinstance(item, InvalidInput):
                out.append(item)
                continue
            result = next(results)
            record = item.record if self.loaded else item
            out.append(_locate(result, record) if isinstance(result, InvalidInput) else result)
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


def stream_batches(records: Iterable[Record | InvalidInput], process_batch: Callable[..., list[Result]],
                   common: Common, *, batch_size: int, writer: RecordWriter | None = None,
                   total: int | None = None, description: str = "records",
                   load: Callable[[Record], Any] | None = None) -> tuple[int, int]:
    """Process records in batches and write one result per record, in input order; returns (valid, errors).

    Without ``load``, ``process_batch(records)`` gets each batch's good records. With it,
    ``process_batch(records, loaded)`` gets them with ``loaded[i] = load(records[i])``, loaded ahead of
    time by ``common.workers`` threads (default: as the data layer decodes files; 0: in this thread), at
    most ``max(2 * batch_size, 2 * threads)`` records ahead. Only this shard's records are loaded, and a
    record whose ``load`` raises :class:`InvalidInput` is reported in its place like one that fails to
    process; ``load`` must be thread-safe. Engines other than serial load on their workers instead.

    ``records`` may contain :class:`InvalidInput` items (a reader's bad lines, see
    ``RecordReader(yield_errors=True)``); they are reported like records that fail to process.
    ``total`` (the input count, when known) sizes the progress bar shown on a terminal.
    """
    writer = writer or RecordWriter()
    engine = common.engine_instance()
    valid = errors = 0
    if total is not None and common.shard.count > 1:
        total = len(common.shard.positions(total))
    items: Iterable[Any] = common.shard.select(records)
    read_ahead = None
    if load is None:
        batch_function = _GuardedBatch(process_batch)
    elif engine.name == "serial":
        threads = _load_threads(common.workers)
        read_ahead = items = _ReadAhead(items, load, threads, max(2 * batch_size, 2 * threads))
        batch_function = _GuardedBatch(process_batch, loaded=True)
    else:
        batch_function = _GuardedBatch(process_batch, load=load)
    try:
        results = (result for batch in engine.map(batch_function, _batches(items, batch_size)) for result in batch)
        for result in progress(results, total, description):
            if not isinstance(result, InvalidInput):
                try:
                    writer.write(result)
                    valid += 1
                    continue
                except InvalidInput as refused:  # a collector refused it (see io.records.Collector)
                    result = refused
            if not common.skip_invalid:
                raise result
            writer.write(error_record(result.record_id, result))
            errors += 1
    finally:
        if read_ahead is not None:
            read_ahead.close()
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

