"""The farm's --device reaches the recipe (training and prediction), and results say where each job ran."""

import pytest
import torch
from confidently.errors import UsageError
from confidently.influence import JobRunner, load_recipe, run_job, subset_plan
from confidently.influence.recipes import RECIPES, OracleLinear
from confidently.io.artifacts import load_artifact_metadata


class DeviceProbe(OracleLinear):
    """The oracle, noting the device each run was handed."""

    kind = "device-probe"
    seen: list = []

    def run(self, include, seed, device="cpu"):
        DeviceProbe.seen.append(device)
        return super().run(include, seed, device=device)


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.setitem(RECIPES._items, "device-probe", DeviceProbe)
    DeviceProbe.seen = []
    return DeviceProbe


def test_the_worker_hands_its_device_to_the_recipe_and_records_it(probe, tmp_path):
    jobs = subset_plan(20, 3, 0.5, seed=0, run_id="d")
    runner = JobRunner("device-probe", str(tmp_path), device="auto")  # no GPU here: auto is the CPU
    first = [runner(job) for job in jobs]
    assert probe.seen == [torch.device("cpu")] * 3
    assert all(r["status"] == "ok" and r["device"] == "cpu" for r in first)
    assert load_artifact_metadata(tmp_path / "d" / "job-000000.safetensors")["device"] == "cpu"
    again = JobRunner("device-probe", str(tmp_path), device="cpu")(jobs[0])
    assert again["status"] == "done-before" and again["device"] == "cpu"  # read back from the result file
    assert len(probe.seen) == 3
    with pytest.raises(UsageError, match="CUDA is not available"):
        JobRunner("device-probe", str(tmp_path), device="cuda")(jobs[1])


def test_a_recipe_on_a_device_gives_what_it_gives_by_default(tmp_path):
    recipe = load_recipe("synthetic-concepts")
    include = list(range(0, 20, 2))
    _, default = recipe.run(include, 5)
    _, placed = recipe.run(include, 5, device=torch.device("cpu"))
    assert all(torch.equal(default[task].logits, placed[task].logits) for task in default)
    job = subset_plan(20, 2, 0.5, seed=0, run_id="c")[0]
    assert run_job(load_recipe("oracle-linear"), job, tmp_path, device="cpu")["device"] == "cpu"
