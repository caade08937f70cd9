"""Streaming with a read-ahead: records load in threads, in input order, a bounded number ahead of the batch."""

import threading
import time

import pytest
from confidently.cli import Common, stream_batches
from confidently.errors import InvalidInput
from confidently.io.records import Record, RecordWriter
from confidently.run.shard import Shard


class Kept(RecordWriter):
    def __init__(self):
        super().__init__()
        self.records = []

    def write(self, record):
        self.records.append(record)


def records(count):
    return [Record({"id": f"r{i}", "image": f"{i}.png"}, line=i + 1, source="in.jsonl") for i in range(count)]


def echo(records, loaded):
    return [{"id": r.id, "loaded": value} for r, value in zip(records, loaded, strict=True)]


def loading_threads():
    return [t for t in threading.enumerate() if t.name.startswith("confidently-load")]


def test_loads_in_threads_and_keeps_input_order():
    threads = set()

    def load(record):
        threads.add(threading.get_ident())
        time.sleep((int(record.id[1:]) * 7 % 5) / 1000)  # later records often finish first
        return record.data["image"]

    writer = Kept()
    assert stream_batches(records(40), echo, Common(workers=3), batch_size=4, writer=writer, load=load) == (40, 0)
    assert writer.records == [{"id": f"r{i}", "loaded": f"{i}.png"} for i in range(40)]
    assert len(threads) > 1 and threading.get_ident() not in threads


def test_loads_at_most_ahead_of_the_batches():
    """2 records a batch, 3 threads: at most max(2·2, 2·3) = 6 loaded or loading beyond the batch being filled."""
    started = processed = most = 0
    lock = threading.Lock()

    def load(record):
        nonlocal started, most
        with lock:
            started += 1
            most = max(most, started - processed)

    def slow(records, loaded):
        nonlocal processed
        with lock:
            processed += len(records)
        time.sleep(0.002)
        return [{"id": r.id} for r in records]

    stream_batches(records(200), slow, Common(workers=3), batch_size=2, writer=Kept(), load=load)
    assert 2 < most <= 6 + 2


def test_a_load_error_is_the_records_error_in_place():
    def load(record):
        if record.id == "r3":
            raise InvalidInput("not a readable image", field="image")
        return record.id

    items = records(8)
    items[6] = InvalidInput("not JSON", source="in.jsonl", line=7)  # a reader's bad line passes through
    writer = Kept()
    assert stream_batches(items, echo, Common(workers=2, skip_invalid=True), batch_size=2, writer=writer,
                          load=load) == (6, 2)
    assert [r.get("error") for r in writer.records] == [
        None, None, None, "in.jsonl:4, field 'image': not a readable image", None, None, "in.jsonl:7: not JSON", None]
    writer = Kept()
    with pytest.raises(InvalidInput, match="in.jsonl:4, field 'image'") as raised:
        stream_batches(items, echo, Common(workers=2), batch_size=2, writer=writer, load=load)
    assert raised.value.record_id == "r3" and [r["id"] for r in writer.records] == ["r0", "r1", "r2"]


@pytest.mark.parametrize("stop", ["invalid", "interrupt"])
def test_an_error_downstream_stops_the_loading(stop):
    """Exit 3 mid-stream or Ctrl-C: the loads not started are cancelled and the threads end."""
    started = []

    def load(record):
        started.append(record.id)
        time.sleep(0.001)
        if stop == "invalid" and record.id == "r5":
            raise InvalidInput("broken")

    def process(records, loaded):
        if stop == "interrupt" and "r5" in [r.id for r in records]:
            raise KeyboardInterrupt
        return [{"id": r.id} for r in records]

    with pytest.raises(InvalidInput if stop == "invalid" else KeyboardInterrupt):
        stream_batches(records(1000), process, Common(workers=3), batch_size=2, writer=Kept(), load=load)
    count = len(started)
    deadline = time.monotonic() + 5
    while loading_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loading_threads() and len(started) == count < 20


def test_only_this_shards_records_are_loaded():
    loaded = []

    def load(record):
        loaded.append(record.id)
        return record.id

    writer = Kept()
    stream_batches(records(12), echo, Common(workers=2, shard=Shard(1, 3)), batch_size=2, writer=writer, load=load)
    assert sorted(loaded) == sorted(["r1", "r4", "r7", "r10"])
    assert [r["id"] for r in writer.records] == ["r1", "r4", "r7", "r10"]


def test_no_workers_loads_in_this_thread():
    threads = set()

    def load(record):
        threads.add(threading.get_ident())
        return record.id

    writer = Kept()
    stream_batches(records(5), echo, Common(workers=0), batch_size=2, writer=writer, load=load)
    assert threads == {threading.get_ident()} and [r["loaded"] for r in writer.records] == [f"r{i}" for i in range(5)]


def test_without_load_the_batch_function_takes_records_only():
    writer = Kept()
    stream_batches(records(3), lambda batch: [{"id": r.id} for r in batch], Common(), batch_size=2, writer=writer)
    assert writer.records == [{"id": "r0"}, {"id": "r1"}, {"id": "r2"}]
