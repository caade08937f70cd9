import json

import pytest
import torch
from confidently.errors import UsageError
from confidently.influence import (
    JobRunner,
    all_outputs,
    check_job,
    counterfactual_plan,
    load_recipe,
    result_path,
    run_job,
    subset_plan,
)
from confidently.io.artifacts import load_artifact


def test_fixed_plans_have_exactly_alpha_k_units_and_are_reproducible():
    jobs = subset_plan(20, 30, 0.5, "fixed", seed=1, run_id="r")
    assert all(len(job["include"]) == 10 and job["include"] == sorted(set(job["include"])) for job in jobs)
    assert json.dumps(jobs) == json.dumps(subset_plan(20, 30, 0.5, "fixed", seed=1, run_id="r"))
    assert jobs[0]["plan_sha256"] != subset_plan(20, 30, 0.5, "fixed", seed=2, run_id="r")[0]["plan_sha256"]
    assert len({tuple(job["include"]) for job in jobs}) > 25
    for alpha in (0.0, 1.0):
        with pytest.raises(UsageError, match="alpha"):
            subset_plan(20, 30, alpha)
    with pytest.raises(UsageError, match="sorted"):
        check_job({**jobs[0], "include": [3, 1]})


def test_counterfactual_orders():
    overall = torch.tensor([0.3, -0.2, 0.1, -0.5, 0.0])
    jobs = counterfactual_plan(overall, ["bottom", "top", "random"], [0, 2], runs=2, seed=0)
    by = {(j["order"], j["k"], j["rep"]): j for j in jobs}
    assert by[("bottom", 2, 0)]["exclude"] == [1, 3] and by[("top", 2, 1)]["exclude"] == [0, 2]
    assert by[("full", 0, 0)]["include"] == [0, 1, 2, 3, 4] and ("bottom", 0, 0) not in by
    assert len(jobs) == 2 + 3 * 2
    again = counterfactual_plan(overall, ["random"], [2], runs=2, seed=0)
    assert [j["exclude"] for j in again] == [by[("random", 2, r)]["exclude"] for r in range(2)]
    with pytest.raises(UsageError, match="at least one unit"):
        counterfactual_plan(overall, ["bottom"], [5], runs=1)


def test_counterfactual_ranks_nan_units_last_in_both_orders():
    overall = torch.tensor([0.3, float("nan"), -0.2, 0.1])
    by = {j["order"]: j["exclude"] for j in counterfactual_plan(overall, ["bottom", "top"], [1], runs=1)}
    assert by == {"bottom": [2], "top": [0]}
    by = {j["order"]: j["exclude"] for j in counterfactual_plan(overall, ["bottom", "top"], [3], runs=1)}
    assert by == {"bottom": [0, 2, 3], "top": [0, 2, 3]}


def test_worker_threads_follow_the_engine_then_slurm(monkeypatch):
    from confidently.influence.worker import worker_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert worker_threads() == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert worker_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert worker_threads() == 1


def test_output_definitions_on_known_logits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    out = all_outputs(logits, labels)
    probs = logits.softmax(1)
    assert torch.allclose(out["softmax_correct"], torch.stack([probs[0, 0], probs[1, 2]]))
    assert out["logit_correct"].tolist() == [2.0, 1.0] and out["margin_raw"].tolist() == [1.0, -2.0]
    assert torch.allclose(out["margin_softmax"], torch.stack([probs[0, 0] - probs[0, 1], probs[1, 2] - probs[1, 1]]))
    assert out["correct"].tolist() == [1.0, 0.0] and out["pred"].tolist() == [0, 1]
    assert ((out["margin_raw"] > 0) == out["correct"].bool()).all()


def test_worker_is_idempotent_and_redoes_broken_files(tmp_path):
    recipe = load_recipe("oracle-linear")
    job = subset_plan(recipe.num_units, 3, seed=0, run_id="w")[1]
    first = run_job(recipe, job, tmp_path)
    assert first["status"] == "ok"
    tensors, meta = load_artifact(result_path(tmp_path, job))
    assert tensors["mask"].sum() == 10 and meta["job_id"] == 1 and "oracle/softmax_correct" in tensors
    assert run_job(recipe, job, tmp_path)["status"] == "done-before"
    result_path(tmp_path, job).write_bytes(b"truncated")
    assert run_job(recipe, job, tmp_path)["status"] == "ok"
    failed = JobRunner("oracle-linear", str(tmp_path))({**job, "num_units": 5, "include": [0, 1]})
    assert failed["status"] == "failed" and "units" in failed["error"]


def test_synthetic_world_trains_in_well_under_a_second():
    recipe = load_recipe("synthetic-concepts")
    accuracy, results = recipe.run(list(range(0, 20, 2)), seed=0)
    assert accuracy > 0.8 and results["concepts"].logits.shape == (600, 4)


def test_a_killed_jobs_temporary_file_is_removed_on_the_next_run(tmp_path):
    import os

    recipe = load_recipe("oracle-linear")
    jobs = subset_plan(recipe.num_units, 3, seed=0, run_id="k")
    run_job(recipe, jobs[0], tmp_path)
    stale = []
    for job in jobs[:2]:  # one finished before the kill (a rerun is a no-op), one killed while writing
        path = result_path(tmp_path, job)
        path.parent.mkdir(parents=True, exist_ok=True)
        stale.append(path.with_name(f".{path.name}.x1y2z3.tmp"))
        stale[-1].write_bytes(b"half a file")
        os.utime(stale[-1], (1_000_000_000, 1_000_000_000))
    mine = tmp_path / "k" / ".notes.tmp"
    mine.write_text("not influence's")
    assert [run_job(recipe, job, tmp_path)["status"] for job in jobs[:2]] == ["done-before", "ok"]
    assert not any(path.exists() for path in stale) and mine.exists()
