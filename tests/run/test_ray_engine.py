"""The Ray engine's workers: their share of the CPUs and GPUs, and a lost worker's units run again."""

import functools
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from confidently.cli import Common, stream_records
from confidently.errors import ConfidentlyError, UsageError
from confidently.io.records import RecordReader, RecordWriter
from confidently.run import create_engine
from confidently.run.threads import THREAD_VARIABLES

from tests.conftest import ROOT
from tests.run.test_engines import MANIFEST, NoisyChecksum

pytestmark = pytest.mark.ray


class Report:
    """What a worker process was given: torch threads, the thread variables, its GPUs."""

    def __call__(self, item):
        import ray

        return {"threads": torch.get_num_threads(), "env": {name: os.environ.get(name) for name in THREAD_VARIABLES},
                "gpus": [str(g) for g in ray.get_gpu_ids()], "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "pid": os.getpid()}


def test_workers_take_their_share_of_the_cpus(ray_local):
    assert os.environ["OMP_NUM_THREADS"] == "1"  # what the workers inherit: their share must win over it
    engine = create_engine("ray", num_cpus=2)
    for report in [*engine.map(Report(), range(2)), *engine.map_stateful(Report, range(2), workers=1)]:
        assert report["threads"] == 2 and report["env"] == dict.fromkeys(THREAD_VARIABLES, "2")
        assert report["gpus"] == [] and report["visible"] == ""  # asked for no GPU, sees none


GPU_CLUSTER = """
import json, ray
from confidently.run import create_engine
from tests.run.test_ray_engine import Report
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
engine = create_engine("ray", num_gpus=0.5)
print(json.dumps([*engine.map(Report(), range(2)), *engine.map_stateful(Report, range(4))]))
ray.shutdown()
"""


def test_workers_get_the_gpus_they_ask_for():
    """On a cluster that has one GPU (in Ray's books: none is needed to hand out its id), in a process of its own."""
    done = subprocess.run([sys.executable, "-c", GPU_CLUSTER], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "RAY_ADDRESS": ""}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads(done.stdout.splitlines()[-1])
    assert all(r["gpus"] == ["0"] and r["visible"] == "0" for r in reports)  # `--device auto` finds this GPU
    assert len({r["pid"] for r in reports[2:]}) == 2  # two half-GPU actors share it


class DiesOnce:
    """Kills its own worker process the first time it meets ``victim`` (the marker file records that it did)."""

    def __init__(self, marker, victim, unit):
        self.marker, self.victim, self.unit = str(marker), victim, unit

    def __call__(self, item):
        key = getattr(item, "id", item)
        if key == self.victim and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.unit(item)


def square(item):
    return item * item


def records(unit, engine):
    out = io.StringIO()
    stream_records(RecordReader(io.StringIO(MANIFEST)), unit, Common(seed=3, engine=engine), RecordWriter(out))
    return out.getvalue().splitlines()


def test_a_lost_worker_costs_no_records(ray_local, tmp_path):
    serial = records(NoisyChecksum(3), "serial")
    assert records(DiesOnce(tmp_path / "task", "r5", NoisyChecksum(3)), "ray") == serial
    assert (tmp_path / "task").exists()  # a worker did die
    engine = create_engine("ray")
    factory = functools.partial(DiesOnce, tmp_path / "actor", 7, square)
    assert list(engine.map_stateful(factory, range(16), workers=2)) == [i * i for i in range(16)]
    assert (tmp_path / "actor").exists()


def always_dies(item):
    os._exit(1)


def test_a_unit_that_kills_every_worker_stops_the_run(ray_local):
    with pytest.raises(ConfidentlyError, match="kept dying"):  # after RETRIES more tries, not forever
        list(create_engine("ray").map(always_dies, range(1)))


def test_gpus_per_worker_needs_a_gpu_in_the_cluster(ray_local):
    assert not ray_local.cluster_resources().get("GPU")
    with pytest.raises(UsageError, match="--gpus-per-worker 0.25, but the Ray cluster has no GPU"):
        Common(engine="ray", gpus_per_worker=0.25).engine_instance()  # the option reaches the engine
    with pytest.raises(UsageError, match="0 or more"):
        create_engine("ray", num_gpus=-1)
