"""Running jobs: serial, sharded and Ray runs agree; records agree with the stored images; shards are datasets."""

from __future__ import annotations

import pytest
import torch
from confidently.data.loader import collect
from confidently.models import load_model
from confidently.render3db import (
    ShardWriter,
    WorkerSettings,
    check_model,
    iter_jobs,
    load_experiment,
    model_input,
    run_jobs,
)
from confidently.run import Shard, create_engine

CONTROLS = [{"module": "orientation", "rotation_x": 0, "rotation_y": 0, "rotation_z": [-3, 3]},
            {"module": "background", "H": [0, 1], "S": 0.7, "V": 0.8},
            {"module": "imagenet_c", "corruption_name": ["fog", "gaussian_noise"], "severity": 2}]


@pytest.fixture
def experiment(experiment_file):
    return load_experiment(experiment_file(policy={"module": "grid", "samples_per_dim": 2}, controls=CONTROLS,
                                           environments=[{"id": "grey", "solid": [0.5, 0.5, 0.5]},
                                                         {"id": "busy", "procedural": "checker"}]))


def results(settings, jobs, engine_name="serial", **options):
    engine = create_engine(engine_name, **options)
    try:
        return {job.id: ({k: v for k, v in fields.items() if k != "timing_s"}, tensors)
                for job, fields, tensors in run_jobs(settings, jobs, engine, chunk_size=3, workers=2)}
    finally:
        engine.close()


def test_serial_and_sharded_runs_agree_and_records_match_the_stored_images(experiment, varied_model, tmp_path):
    settings = check_model(WorkerSettings(experiment, str(varied_model), "cpu", True, True))
    jobs = list(iter_jobs(experiment, 0))
    assert len(jobs) == 2 * 2 * 2 * 2 * 2  # pairs × rotation × hue × corruption
    serial = results(settings, jobs)
    sharded = {}
    for index in range(3):
        sharded.update(results(settings, Shard(index, 3).select(iter(jobs))))
    assert set(serial) == set(sharded) == {j.id for j in jobs}
    for key in serial:
        assert serial[key][0] == sharded[key][0] and torch.equal(serial[key][1]["rgb"], sharded[key][1]["rgb"])
    predictions = {fields["prediction"][0] for fields, _ in serial.values()}
    assert len(predictions) > 1 and 0 < sum(f["is_correct"] for f, _ in serial.values()) < len(serial)
    # an independent evaluation of the stored images gives the records' answers
    writer = ShardWriter(tmp_path / "renders.safetensors", tmp_path, total=len(jobs), shard_size=1000)
    records = []
    for job in jobs:
        fields, tensors = serial[job.id]
        records.append(writer.add({**job.record("grid", "x"), **fields}, tensors))
    writer.close()
    from confidently.data import open_dataset

    dataset = open_dataset(tmp_path / "renders.safetensors")
    images, labels = collect(dataset)
    model = load_model(varied_model)
    with torch.inference_mode():
        logits = model(images.float())
    for record in records:
        index = record["image"]["index"]
        assert labels[index] == record["label"]
        assert int(logits[index].argmax()) == record["prediction"][0]
        assert (int(logits[index].argmax()) == record["label"]) == record["is_correct"]
        assert record["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(
            logits[index:index + 1].double(), torch.tensor([record["label"]]))), abs=1e-5)
    assert model_input(images[0], (3, 16, 16)).shape == (1, 3, 16, 16)  # renders are resized to the model's input


@pytest.mark.ray
def test_ray_workers_give_the_serial_results(experiment, varied_model, ray_local):
    settings = check_model(WorkerSettings(experiment, str(varied_model), "cpu", True, False))
    jobs = list(iter_jobs(experiment, 0))[:12]
    serial = results(settings, jobs)
    remote = results(settings, jobs, "ray")
    assert list(serial) == list(remote) and all(serial[k][0] == remote[k][0] for k in serial)
