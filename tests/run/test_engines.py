"""Serial, sharded and Ray runs emit identical records."""

import io
import time

import pytest
import torch
from confidently.cli import Common, stream_records
from confidently.data import corrupt
from confidently.io.records import RecordReader, RecordWriter
from confidently.run import Shard, create_engine, record_generator


class NoisyChecksum:
    """A per-record unit whose randomness comes from (seed, id) only."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, record):
        image = torch.full((1, 3, 8, 8), 0.5)
        noisy = corrupt(image, "gaussian_noise", 3, record_generator(self.seed, record.id))
        return {**record.data, "checksum": round(float(noisy.sum()), 6)}


MANIFEST = "".join(f'{{"id":"r{i}","n":{i}}}\n' for i in range(13))


def run(engine="serial", shard=None):
    out = io.StringIO()
    common = Common(seed=3, engine=engine, shard=Shard.parse(shard))
    stream_records(RecordReader(io.StringIO(MANIFEST)), NoisyChecksum(3), common, RecordWriter(out))
    return out.getvalue().splitlines()


def test_sharded_runs_reassemble_the_serial_run():
    serial = run()
    shards = [run(shard=f"{i}/4") for i in range(4)]
    assert sorted(sum(shards, []), key=serial.index) == serial
    assert len(set(serial)) == 13


@pytest.mark.ray
def test_ray_tasks_equal_serial(ray_local):
    assert run("ray") == run()
    assert run("ray", "1/2") == run(shard="1/2")


@pytest.mark.ray
def test_ray_actors_keep_state_and_order(ray_local):
    engine = create_engine("ray")
    results = list(engine.map_stateful(SlowStart, range(20), workers=2))
    engine.close()
    assert [value for value, _ in results] == [i * 10 for i in range(20)]
    assert sum(calls for _, calls in results) > 20  # each actor counted its own calls
    assert engine.workers_ready >= SlowStart.seconds  # the start-up is timed up to the built actors


@pytest.mark.parametrize("engine", ["serial"])
def test_engines_time_their_workers_start_up(engine):
    engine = create_engine(engine)
    assert engine.workers_ready is None
    assert [value for value, _ in engine.map_stateful(SlowStart, range(3))] == [0, 10, 20]
    assert SlowStart.seconds <= engine.workers_ready < 10 * SlowStart.seconds + 1


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, item):
        self.calls += 1
        return item * 10, self.calls


class SlowStart(Counter):
    """A worker whose construction takes a known time (a renderer's or model's start-up)."""

    seconds = 0.2

    def __init__(self):
        super().__init__()
        time.sleep(self.seconds)
