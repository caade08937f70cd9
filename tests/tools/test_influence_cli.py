"""`influence` as a user runs it: plan | train | estimate, resume, shards, Ray, queries, counterfactual, bad input."""

import json
import os
import subprocess

import pytest
import torch
from confidently.io.artifacts import artifact_metadata, load_artifact_metadata, save_artifact
from safetensors.torch import load_file

from tests.conftest import BIN, ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
       "PATH": os.pathsep.join([str(BIN), str(ROOT / "bin"), os.environ.get("PATH", "")])}


def shell(cwd, command):
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=600)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    root = tmp_path_factory.mktemp("influence")
    done = shell(root, "influence plan --recipe oracle-linear --num-models 40 --run-id o > plan.jsonl && "
                       "influence train plan.jsonl --recipe oracle-linear --out-dir results > done.jsonl")
    assert done.returncode == 0, done.stderr
    return root


def records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_plan_train_estimate_ranks_the_planted_units(farm):
    ranking = shell(farm, "influence estimate done.jsonl --output logit_correct --out infl.safetensors")
    assert ranking.returncode == 0, ranking.stderr
    ranks = records(ranking.stdout)
    assert ranks[0]["unit"] == 3 and ranks[-1]["unit"] == 7  # the oracle's planted helper and harmful unit
    assert [r["rank"] for r in ranks] == list(range(1, 21))
    tensors = load_file(farm / "infl.safetensors")
    assert tensors["influence"].shape == (20, 30) and int(tensors["n_in"].sum()) == 40 * 10
    top = records(shell(farm, "influence top infl.safetensors --sign neg --k 1").stdout)
    assert top[0]["unit"] == 7
    explained = json.loads(shell(farm, "influence explain infl.safetensors --target 0 --k 2").stdout)
    assert explained["negative"][0]["unit"] == 7 and explained["positive"][0]["unit"] == 3
    subpop = records(shell(farm, "influence subpop infl.safetensors --source 3 --k 4").stdout)
    assert len(subpop) == 4 and all(r["influence"] > 0.5 for r in subpop)


def test_rerun_resume_shards_and_partial_sums_give_the_same_estimate(farm):
    again = shell(farm, "influence train plan.jsonl --recipe oracle-linear --out-dir results")
    assert {r["status"] for r in records(again.stdout)} == {"done-before"}
    one = shell(farm, "influence estimate --results results --output logit_correct").stdout
    # a killed farm: remove some results, re-run, only the missing ones are trained
    for name in ("job-000005.safetensors", "job-000017.safetensors"):
        (farm / "results" / "o" / name).unlink()
    status = json.loads(shell(farm, "influence status --plan plan.jsonl --out-dir results").stdout)
    assert status["missing"] == 2 and status["array"] == "5,17"
    resumed = records(shell(farm, "influence train plan.jsonl --recipe oracle-linear --out-dir results").stdout)
    assert sorted(r["job_id"] for r in resumed if r["status"] == "ok") == [5, 17]
    assert shell(farm, "influence estimate --results results --output logit_correct").stdout == one
    sharded = shell(farm, "for i in 0 1; do influence train plan.jsonl --recipe oracle-linear --out-dir s "
                          "--shard $i/2 > s$i.jsonl; done; "
                          "influence estimate s0.jsonl --output logit_correct --partial-out p0.safetensors && "
                          "influence estimate s1.jsonl --output logit_correct --partial-out p1.safetensors && "
                          "influence estimate --merge p0.safetensors --merge p1.safetensors")
    assert sharded.returncode == 0, sharded.stderr
    assert [r["unit"] for r in records(sharded.stdout)] == [r["unit"] for r in records(one)]
    assert [r["overall"] for r in records(sharded.stdout)] == pytest.approx([r["overall"] for r in records(one)],
                                                                            abs=2e-6)


def test_holdout_jobs_train_with_the_farm_stay_out_of_estimates_and_score_them(tmp_path):
    """plan --holdout | train | estimate --estimator ridge (and the difference of means); lds on the held-out
    models ranks ridge first; the queries read a ridge estimate like any other."""
    run = shell(tmp_path, "influence plan --recipe oracle-linear --num-models 40 --holdout 20 --run-id h "
                          "> plan.jsonl && "
                          "influence train plan.jsonl --recipe oracle-linear --out-dir r > done.jsonl && "
                          "influence estimate done.jsonl --output logit_correct --estimator ridge "
                          "--out ridge.safetensors > ridge.jsonl && "
                          "influence estimate --results r --output logit_correct --out diff.safetensors > /dev/null && "
                          "influence lds ridge.safetensors diff.safetensors --results r --mean-only > lds.jsonl && "
                          "influence top ridge.safetensors --k 1")
    assert run.returncode == 0, run.stderr
    plan = records((tmp_path / "plan.jsonl").read_text())
    assert [job.get("holdout", False) for job in plan] == [False] * 40 + [True] * 20
    assert sum(r.get("holdout", False) for r in records((tmp_path / "done.jsonl").read_text())) == 20
    assert "set aside 20 held-out results" in run.stderr
    ranks = records((tmp_path / "ridge.jsonl").read_text())
    assert ranks[0]["unit"] == 3 and ranks[-1]["unit"] == 7 and ranks[0]["estimator"] == "ridge"
    assert records(run.stdout)[0]["unit"] == 3  # `top` on a ridge estimate
    meta = load_artifact_metadata(tmp_path / "ridge.safetensors")
    assert meta["estimator"] == "ridge" and meta["job_ids"] == list(range(40)) and meta["num_models"] == 40
    regularisation = meta["regularisation"]
    assert regularisation["chosen_by"] == "5-fold cross-validation" and regularisation["penalty"] == "l2"
    tensors = load_file(tmp_path / "ridge.safetensors")
    assert int(tensors["n_in"].sum()) == 40 * 10 and tensors["intercept"].shape == (30,)
    assert load_artifact_metadata(tmp_path / "diff.safetensors")["estimator"] == "diff-means"
    scores = {r["estimator"]: r for r in records((tmp_path / "lds.jsonl").read_text())}
    assert set(scores) == {"ridge", "diff-means"} and all(r["scope"] == "mean" for r in scores.values())
    assert scores["ridge"]["holdout_models"] == 20 and scores["ridge"]["targets"] == 30
    assert scores["ridge"]["lds"] >= scores["diff-means"]["lds"] > 0.5
    refused = shell(tmp_path, "influence lds ridge.safetensors --results r --holdout-jobs 0-4,45")
    assert refused.returncode == 3 and "used to fit the estimate" in refused.stderr
    set_aside = shell(tmp_path, "influence estimate --results r --output logit_correct --holdout-jobs 30-39 "
                                "--estimator lasso --out lasso.safetensors > /dev/null && "
                                "influence lds lasso.safetensors --results r --holdout-jobs 30-39 | tail -1")
    assert set_aside.returncode == 0, set_aside.stderr
    (mean,) = records(set_aside.stdout)
    assert mean["estimator"] == "lasso" and mean["holdout_models"] == 10 and mean["fit_models"] == 30


def test_merge_writes_an_estimate_and_refuses_mixtures_and_duplicates(farm):
    made = shell(farm, "head -20 done.jsonl > a.jsonl && tail -20 done.jsonl > b.jsonl && "
                       "influence estimate a.jsonl --output logit_correct --partial-out pa.safetensors && "
                       "influence estimate b.jsonl --output logit_correct --partial-out pb.safetensors && "
                       "influence estimate b.jsonl --output correct --partial-out pc.safetensors")
    assert made.returncode == 0, made.stderr
    merged = shell(farm, "influence estimate --merge pa.safetensors --merge pb.safetensors --out pm.safetensors")
    assert merged.returncode == 0, merged.stderr
    whole = shell(farm, "influence estimate done.jsonl --output logit_correct")
    assert [r["overall"] for r in records(merged.stdout)] == pytest.approx([r["overall"] for r in
                                                                           records(whole.stdout)], abs=2e-6)
    assert load_artifact_metadata(farm / "pm.safetensors")["output"] == "logit_correct"  # the partials' output
    for other, words in (("pa", "both hold job 0"), ("pc", "differ in output")):
        refused = shell(farm, f"influence estimate --merge pa.safetensors --merge {other}.safetensors")
        assert refused.returncode == 3 and words in refused.stderr and f"{other}.safetensors" in refused.stderr
    asked = shell(farm, "influence estimate --merge pa.safetensors --output correct")
    assert asked.returncode == 3 and "not --output 'correct'" in asked.stderr
    twice = shell(farm, "cat a.jsonl a.jsonl | influence estimate --output logit_correct")
    assert twice.returncode == 3 and "counts once" in twice.stderr


def test_counterfactual_ranks_and_reports_nan_units(farm):
    overall = torch.tensor([0.3, float("nan"), -0.2, 0.1])
    save_artifact(farm / "nan.safetensors", {"influence": overall[:, None].clone(), "overall": overall},
                  artifact_metadata(tool="influence", kind="influence"))
    result = shell(farm, "influence counterfactual --influence nan.safetensors --ks 1 --runs 1 --order bottom,top")
    assert result.returncode == 0, result.stderr
    assert {r["order"]: r["exclude"] for r in records(result.stdout)} == {"bottom": [2], "top": [0]}
    assert "1 units have a NaN influence" in result.stderr


def test_counterfactual_jobs_run_and_summarize(farm):
    shell(farm, "influence estimate done.jsonl --output logit_correct --out infl.safetensors > /dev/null")
    result = shell(farm, "influence counterfactual --influence infl.safetensors --ks 0,2 --runs 2 "
                         "| influence train --recipe oracle-linear --out-dir cf | influence summarize")
    assert result.returncode == 0, result.stderr
    rows = {(r["order"], r["k"]): r for r in records(result.stdout)}
    assert set(rows) == {("full", 0), ("bottom", 2), ("top", 2), ("random", 2)}
    assert all(r["runs"] == 2 for r in rows.values())


def test_slurm_script_runs_one_job_per_array_task(farm):
    script = shell(farm, "influence slurm-script --plan plan.jsonl --recipe oracle-linear --out-dir results "
                         "--concurrency 8 --partition gpu")
    assert "#SBATCH --array=0-39%8" in script.stdout and "--job-index $SLURM_ARRAY_TASK_ID" in script.stdout
    assert "#SBATCH --cpus-per-task=1" in script.stdout and (farm / "logs").is_dir()
    sized = shell(farm, "influence slurm-script --plan plan.jsonl --recipe oracle-linear --out-dir slurm "
                        "--cpus-per-task 3 --log-dir runs/logs > farm.sbatch && "
                        "env -u OMP_NUM_THREADS SLURM_ARRAY_TASK_ID=7 SLURM_CPUS_PER_TASK=3 bash farm.sbatch")
    assert sized.returncode == 0, sized.stderr
    text = (farm / "farm.sbatch").read_text()
    assert "#SBATCH --cpus-per-task=3" in text and f"#SBATCH --output={farm / 'runs' / 'logs'}/" in text
    assert (farm / "runs" / "logs").is_dir() and (farm / "slurm" / "o" / "job-000007.safetensors").exists()
    one = shell(farm, "influence train --plan plan.jsonl --job-index 12 --recipe oracle-linear --out-dir single")
    (result,) = records(one.stdout)
    assert result["job_id"] == 12 and (farm / "single" / "o" / "job-000012.safetensors").exists()


@pytest.mark.parametrize("command, code, message", [
    ("influence plan --num-units 10 --num-models 5 --alpha 1.0", 2, "alpha"),
    ("influence train --plan plan.jsonl --job-index 99 --recipe oracle-linear --out-dir x", 2, "beyond the plan"),
    ("influence train plan.jsonl --recipe nonsense --out-dir x", 2, "recipe"),
])
def test_bad_input(farm, command, code, message):
    result = shell(farm, command)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_results_of_another_plan_are_refused(farm):
    mixed = shell(farm, "influence plan --recipe oracle-linear --num-models 4 --run-id o --seed 9 "
                        "| influence train --recipe oracle-linear --out-dir other > /dev/null && "
                        "cp other/o/job-000000.safetensors results/o/job-009999.safetensors && "
                        "influence estimate --results results")
    (farm / "results" / "o" / "job-009999.safetensors").unlink()
    assert mixed.returncode == 3 and "another plan" in mixed.stderr


@pytest.mark.ray
def test_ray_farm_equals_the_serial_one(farm):
    ray = shell(farm, "influence train plan.jsonl --recipe oracle-linear --out-dir ray --engine ray --workers 2 "
                      "> ray.jsonl && "
                      "influence estimate ray.jsonl --output logit_correct")
    assert ray.returncode == 0, ray.stderr
    serial = shell(farm, "influence estimate --results results --output logit_correct")
    assert ray.stdout == serial.stdout


def test_a_recipe_file_with_example_units_feeds_leakage(tmp_path):
    (tmp_path / "recipe.toml").write_text('''
[source]
data = "demo:shapes?classes=4&size=8&per_class=6"
split = "train"
classes = [0, 1]
granularity = "example"
epochs = 2
batch_size = 8

[[target]]
name = "pair"
train = "demo:shapes?classes=4&size=8&per_class=6"
train_split = "train"
test_split = "test"
classes = [2, 3]
epochs = 2
batch_size = 8
''')
    run = shell(tmp_path, "influence plan --recipe recipe.toml --num-models 6 --run-id ex "
                          "| influence train --recipe recipe.toml --out-dir r "
                          "| influence estimate --target pair --out infl.safetensors > /dev/null && "
                          "influence leakage infl.safetensors --k 2")
    assert run.returncode == 0, run.stderr
    rows = records(run.stdout)
    per_target, overall = rows[:-1], rows[-1]
    assert per_target and all(len(r["top_positive"]) == 2 for r in per_target)
    assert overall["scope"] == "overall" and overall["most_negative"][0]["name"].startswith("shapes")
    assert "these units are classes" not in run.stderr  # the plan carried the recipe's granularity


def test_ranking_uses_the_validation_split_and_reports_on_test(tmp_path):
    run = shell(tmp_path, "influence plan --recipe synthetic-concepts --num-models 6 --run-id v "
                          "| influence train --recipe synthetic-concepts --out-dir r > done.jsonl && "
                          "influence estimate done.jsonl --out i.safetensors | head -1 && "
                          "influence counterfactual --influence i.safetensors --ks 0,2 --runs 1 --order top "
                          "| influence train --recipe synthetic-concepts --out-dir cf | influence summarize")
    assert run.returncode == 0, run.stderr
    rows = records(run.stdout)
    assert rows[0]["target"] == "concepts:val"
    assert {(r["order"], r["k"]) for r in rows[1:]} == {("full", 0), ("top", 2)}
    warned = shell(tmp_path, "influence estimate done.jsonl --target concepts > /dev/null")
    assert warned.returncode == 0 and "overstates" in warned.stderr


def test_convergence_spread_shrinks_with_models(farm):
    result = shell(farm, "influence convergence --results results --output logit_correct --m-grid 10,40 "
                         "--bootstrap 30")
    assert result.returncode == 0, result.stderr
    small, large = records(result.stdout)
    assert small["models"] == 10 and large["models"] == 40 and small["mean_std"] > large["mean_std"]
    few = shell(farm, "influence convergence --results results --output logit_correct --m-grid 2 --bootstrap 5")
    assert few.returncode == 0, few.stderr  # every unit's spread undefined with 2 models: null, not a crash
    (row,) = records(few.stdout)
    assert row["models"] == 2 and (row["max_std"] is None or row["max_std"] >= 0)


def test_a_recipe_on_an_imagenet_folder_of_mixed_size_photos(tmp_path):
    """The farm on a user's folder with a timm model at 224: photos of any size (grey, CMYK, 16-bit, EXIF ones
    too) fitted to the recipe's size as each job streams its subset; planning reads the records only (an
    unreadable file does not stop it)."""
    from tests.photos import make_imagenet_folder

    make_imagenet_folder(tmp_path / "photos", train_per_class=2, val_per_class=2)
    (tmp_path / "recipe.toml").write_text('''
[source]
data = "photos"
split = "train"
arch = "resnet18"
img_size = 224
epochs = 1
batch_size = 8

[[target]]
name = "val"
train = "photos"
train_split = "val"
test_split = "val"
epochs = 1
batch_size = 8
''')
    unreadable = next((tmp_path / "photos" / "train").iterdir()) / "unreadable.JPEG"
    unreadable.write_bytes(b"not a jpeg")
    planned = shell(tmp_path, "influence plan --recipe recipe.toml --num-models 3 --run-id photos > plan.jsonl")
    assert planned.returncode == 0, planned.stderr
    unreadable.unlink()
    run = shell(tmp_path, "influence train plan.jsonl --recipe recipe.toml --out-dir r "
                          "| influence estimate --target val --out infl.safetensors")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "infl.safetensors").exists()
