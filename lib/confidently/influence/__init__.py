"""Which source classes help or hurt a transferred model (thesis ch. 8): plans of subset trainings, the
worker that runs one, the difference-of-means estimator with mergeable sums, the counterfactual, the
queries asked of an estimate and the Slurm job array that runs a plan."""

from confidently.influence.estimate import Influence, InfluenceSums, bootstrap_convergence, bootstrap_std, estimate
from confidently.influence.outputs import all_outputs, list_outputs, register_output
from confidently.influence.plan import check_job, counterfactual_plan, plan_checksum, select_jobs, subset_plan
from confidently.influence.recipes import Recipe, TaskResult, list_recipes, load_recipe, register_recipe
from confidently.influence.results import FarmResults, load_results, merge_partials, result_files, sum_results
from confidently.influence.worker import JobRunner, result_path, run_job

__all__ = [
    "FarmResults", "Influence", "InfluenceSums", "JobRunner", "Recipe", "TaskResult", "all_outputs",
    "bootstrap_convergence", "bootstrap_std", "check_job", "counterfactual_plan", "estimate", "list_outputs",
    "list_recipes", "load_recipe", "load_results", "merge_partials", "plan_checksum", "register_output",
    "register_recipe", "result_files", "result_path", "run_job", "select_jobs", "subset_plan", "sum_results",
]
