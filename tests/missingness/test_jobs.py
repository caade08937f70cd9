"""The ablate record commands' jobs: rows of a tensor file travel with their records, so what is written
does not depend on batching or on the engine that ran the batches."""

import io
import json

import pytest
import torch
from confidently.cli import Common, stream_batches
from confidently.errors import InvalidInput
from confidently.io.images import save_image
from confidently.io.records import ROWS, Collector, RecordReader
from confidently.missingness import Inputs, Orders, make_fill
from confidently.missingness.jobs import ApplyJob, OrderJob, consistency_ks


def manifest(tmp_path, sizes):
    lines = []
    for i, (height, width) in enumerate(sizes):
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(i))
        save_image(image, tmp_path / f"p{i}.png")
        lines.append(json.dumps({"id": f"p{i}", "image": str(tmp_path / f"p{i}.png")}))
    return "\n".join(lines) + "\n"


def inputs():
    return Inputs("patch", 4, False, 10, None, None)


def run(job, text, writer, engine="serial", batch_size=2, skip_invalid=False):
    common = Common(seed=5, engine=engine, skip_invalid=skip_invalid, workers=0)
    stream_batches(RecordReader(io.StringIO(text), require_image=True, yield_errors=True), job, common,
                   load=job.inputs.load, batch_size=batch_size, writer=writer)
    return writer


def orders_run(text, engine="serial", batch_size=2):
    job = OrderJob(Orders("random", None, None, torch.device("cpu"), 5, 2), inputs(), 5)
    out = io.StringIO()
    writer = run(job, text, Collector(job.keep, out), engine, batch_size)
    return out.getvalue(), job.artifact(writer.kept), [i for i, _, _ in writer.kept]


def test_orders_file_rows_follow_the_records_whatever_the_batch(tmp_path):
    text = manifest(tmp_path, [(16, 16)] * 5)
    lines, tensors, ids = orders_run(text, batch_size=2)
    assert (lines, ids) == orders_run(text, batch_size=3)[::2]
    assert torch.equal(tensors["orders"], orders_run(text, batch_size=3)[1]["orders"])
    assert ids == [f"p{i}" for i in range(5)]
    assert all(ROWS not in json.loads(line) for line in lines.splitlines())
    for row, record in zip(tensors["orders"], lines.splitlines(), strict=True):
        assert sorted(row.tolist()) == list(range(16))
        assert row[:10].tolist() == json.loads(record)["ablate"]["first"]


@pytest.mark.ray
def test_orders_file_under_ray_equals_the_serial_one(tmp_path, ray_local):
    text = manifest(tmp_path, [(16, 16)] * 4)
    serial, ray_run = orders_run(text), orders_run(text, engine="ray")
    assert serial[0] == ray_run[0] and serial[2] == ray_run[2]
    assert torch.equal(serial[1]["orders"], ray_run[1]["orders"])  # the file is not empty under Ray


def test_apply_points_records_at_their_rows_and_refuses_a_second_size(tmp_path):
    text = manifest(tmp_path, [(16, 16), (12, 12), (16, 16)])
    job = ApplyJob(Orders("random", None, None, torch.device("cpu"), 5, 2), make_fill("black"), inputs(), 5,
                   tmp_path / "m.safetensors", "black", remove=3)
    out = io.StringIO()
    writer = run(job, text, Collector(job.keep, out, hold=True), skip_invalid=True)
    assert out.getvalue() == ""  # held until the tensor file is written
    writer.release()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2"]
    assert "one image size" in records[1]["error"]
    assert [r["mask"]["index"] for r in (records[0], records[2])] == [0, 1]
    tensors = job.artifact(writer.kept)
    assert tuple(tensors["masks"].shape) == (2, 16, 16) and tuple(tensors["images"].shape) == (2, 3, 16, 16)
    assert [int((mask == 0).sum()) for mask in tensors["masks"]] == [3 * 16, 3 * 16]


def test_apply_without_skip_invalid_stops_at_the_second_size(tmp_path):
    text = manifest(tmp_path, [(16, 16), (12, 12)])
    job = ApplyJob(Orders("random", None, None, torch.device("cpu"), 5, 2), make_fill("black"), inputs(), 5,
                   tmp_path / "m.safetensors", "black", remove_frac=0.5)
    with pytest.raises(InvalidInput, match="one image size"):
        run(job, text, Collector(job.keep, io.StringIO(), hold=True))


def test_consistency_ks_default_to_every_k_and_refuse_too_many():
    assert consistency_ks(None, 4) == [1, 2, 3, 4]
    assert consistency_ks([2, 3], 4) == [2, 3]
    with pytest.raises(Exception, match="1..4"):
        consistency_ks([2, 5], 4)
