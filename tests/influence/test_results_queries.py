"""The library side of `influence`'s commands: choosing jobs, reading a farm's results, merging partial sums,
the queries on an estimate and the Slurm array of what is missing."""

import math
import re
from pathlib import Path

import pytest
import torch
from confidently.errors import InvalidInput, UsageError
from confidently.influence import (
    estimate,
    load_recipe,
    load_results,
    merge_partials,
    result_path,
    run_job,
    select_jobs,
    subset_plan,
    sum_results,
)
from confidently.influence.queries import driven_targets, explain_target, leakage_candidates, ranked, top_units
from confidently.influence.results import choose_task, counterfactual_summary
from confidently.influence.slurm import array_spec, farm_status, sbatch_script
from confidently.io.artifacts import artifact_metadata, save_artifact
from confidently.io.records import Record


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """12 oracle-linear jobs of one plan, every one trained."""
    out = tmp_path_factory.mktemp("farm")
    recipe = load_recipe("oracle-linear")
    jobs = subset_plan(recipe.num_units, 12, seed=3, run_id="t")
    for job in jobs:
        run_job(recipe, job, out)
    return out, jobs


def files_of(farm):
    out, jobs = farm
    return [result_path(out, job) for job in jobs]


def test_select_jobs_by_index_and_range_names_the_argument_when_wrong():
    jobs = [{"job_id": i} for i in range(5)]
    assert select_jobs(jobs) == jobs
    assert select_jobs(jobs, "3") == [{"job_id": 3}] and select_jobs(jobs, job_range="1:4") == jobs[1:4]
    with pytest.raises(UsageError, match="job_index '3x'"):
        select_jobs(jobs, "3x")
    with pytest.raises(UsageError, match="job_range '1-4'"):
        select_jobs(jobs, job_range="1-4")
    with pytest.raises(UsageError, match="job index 5 is beyond the plan"):
        select_jobs(jobs, job_range="3:6")


@pytest.mark.parametrize("ids", [[], [4], [0, 1, 2, 5, 7, 8], [1, 3, 5], list(range(10, 40))])
def test_array_spec_expands_back_to_the_ids(ids):
    spec = array_spec(ids)
    expanded = []
    for part in filter(None, spec.split(",")):
        low, _, high = part.partition("-")
        expanded += list(range(int(low), int(high or low) + 1))
    assert expanded == ids and len(spec.split(",")) <= max(1, len(ids))


def test_status_lists_missing_jobs_and_the_script_runs_each_job(farm, tmp_path):
    out, jobs = farm
    status = farm_status(jobs, out)
    assert status == {"kind": "influence.status", "jobs": 12, "done": 12, "missing": 0, "array": ""}
    assert farm_status(jobs, tmp_path)["array"] == "0-11"
    script = sbatch_script(jobs, "plan.jsonl", "oracle-linear", out, concurrency=4, gpus_per_task=0, array="3,5")
    assert "#SBATCH --array=3,5%4" in script and "--gpus-per-task" not in script
    assert re.search(r"--plan /\S*plan.jsonl --job-index \$SLURM_ARRAY_TASK_ID", script)


def test_results_give_the_same_sums_read_in_any_order_and_merged_from_partials(farm, tmp_path):
    files = files_of(farm)
    sums, info = sum_results(files, output="logit_correct")
    again, _ = sum_results(list(reversed(files)), output="logit_correct")
    assert torch.allclose(sums.sum_in, again.sum_in) and info["job_ids"] == list(range(12))
    assert info["target"] == "oracle" and info["num_models"] == 12 and info["output"] == "logit_correct"
    paths = []
    for name, part in (("a", files[:5]), ("b", files[5:])):
        part_sums, part_info = sum_results(part, output="logit_correct")
        paths.append(tmp_path / f"{name}.safetensors")
        save_artifact(paths[-1], part_sums.tensors(), artifact_metadata(tool="influence", kind="partial", **part_info))
    merged, merged_info = merge_partials(paths)
    assert merged.models == 12 and merged_info == info
    assert torch.allclose(estimate(merged).influence, estimate(sums).influence, atol=1e-6)
    with pytest.raises(InvalidInput, match="both hold job 0"):
        merge_partials([paths[0], paths[0]])


def test_results_of_a_job_twice_or_of_another_plan_are_refused(farm, tmp_path):
    files = files_of(farm)
    with pytest.raises(InvalidInput, match="counts once"):
        load_results([*files, files[0]])
    recipe = load_recipe("oracle-linear")
    stranger = subset_plan(recipe.num_units, 2, seed=4, run_id="t")[0]
    run_job(recipe, stranger, tmp_path)
    with pytest.raises(InvalidInput, match="another plan"):
        load_results([*files, result_path(tmp_path, stranger)])


def test_result_files_come_from_done_records_only(farm):
    files = files_of(farm)
    from confidently.influence import result_files

    records = [Record({"kind": "influence.result", "status": status, "path": str(path)}, i + 1, "<test>")
               for i, (status, path) in enumerate(zip(("ok", "failed", "done-before"), files, strict=False))]
    assert result_files(records) == [files[0], files[2]]
    assert result_files(folder=farm[0]) == sorted(files)
    with pytest.raises(InvalidInput, match="influence.result"):
        result_files([Record({"kind": "influence.job"}, 1, "<test>")])


def test_the_validation_split_ranks_and_the_test_split_reports():
    tasks = ["cats", "cats:val"]
    assert choose_task(tasks, None, selecting=True) == "cats:val"
    assert choose_task(tasks, None, selecting=False) == "cats"
    assert choose_task(["cats"], None, selecting=True) == "cats"
    with pytest.raises(UsageError, match="choose one as the target"):
        choose_task(["cats", "dogs"], None, selecting=False)
    with pytest.raises(UsageError, match="`target` 'birds'"):
        choose_task(tasks, "birds", selecting=True)


def test_ranking_puts_nan_last_and_breaks_ties_by_index():
    values = torch.tensor([0.5, float("nan"), -1.0, 0.5, 2.0])
    assert ranked(values, "pos") == [4, 0, 3, 2, 1]
    assert ranked(values, "neg") == [2, 0, 3, 4, 1]


def influence_file():
    influence = torch.tensor([[0.9, -0.1, 0.2], [-0.5, 0.8, 0.0], [0.1, 0.1, -0.7]])
    labels = torch.tensor([0, 1, 1])
    per_class = torch.stack([influence[:, :1].mean(1), influence[:, 1:].mean(1)], dim=1)
    return {"influence": influence, "overall": influence.mean(1), "per_class": per_class, "labels": labels}


def test_queries_answer_from_the_right_slice_and_refuse_what_is_not_there():
    tensors = influence_file()
    assert [r["unit"] for r in top_units(tensors, {}, "target:2", "neg", k=2)] == [2, 1]
    assert [r["unit"] for r in top_units(tensors, {}, "class:1", "pos", k=1)] == [1]
    assert [r["target_index"] for r in driven_targets(tensors, 1, k=2)] == [1, 2]
    explained = explain_target(tensors, 0, k=1)
    assert explained["negative"][0]["unit"] == 1 and explained["positive"][0]["unit"] == 0
    for query in (lambda: top_units(tensors, {}, "class:2"), lambda: top_units(tensors, {}, sign="up"),
                  lambda: driven_targets(tensors, 3), lambda: explain_target(tensors, 3)):
        with pytest.raises(UsageError):
            query()


def test_leakage_names_each_targets_most_helpful_units_then_the_most_harmful():
    rows = list(leakage_candidates(influence_file(), {"unit_names": '["a", "b", "c"]'}, k=1))
    assert [r["top_positive"][0]["name"] for r in rows[:-1]] == ["a", "b", "a"]
    assert rows[-1]["scope"] == "overall" and rows[-1]["most_negative"][0]["name"] == "c"


def test_counterfactual_summary_is_the_mean_and_sample_std_per_order_and_k(tmp_path):
    files = []
    for i, (order, k, acc) in enumerate((("top", 2, 0.5), ("top", 2, 0.7), ("full", 0, 0.9))):
        files.append(Path(tmp_path / f"job-{i}.safetensors"))
        save_artifact(files[-1], {"mask": torch.ones(3, dtype=torch.bool)},
                      artifact_metadata(tool="influence", kind="result", mode="counterfactual", order=order, k=k,
                                        target_acc={"t": acc, "t:val": 0.0}))
    rows = counterfactual_summary(files)
    assert [(r["order"], r["k"], r["runs"]) for r in rows] == [("full", 0, 1), ("top", 2, 2)]
    assert rows[1]["acc_mean"] == pytest.approx(0.6) and rows[1]["acc_std"] == pytest.approx(math.sqrt(0.02))
    assert rows[0]["acc_std"] == 0.0
