"""Which source classes help or hurt a transferred model (thesis ch. 8): plans of subset trainings (with
held-out jobs), the worker that runs one, the estimators with mergeable sums — the difference of means and
the linear datamodels (ridge, lasso) — and their linear datamodeling score, the counterfactual, the queries
asked of an estimate and the Slurm job array that runs a plan."""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "GramSums": "confidently.influence.estimate",
    "Influence": "confidently.influence.estimate",
    "InfluenceSums": "confidently.influence.estimate",
    "bootstrap_convergence": "confidently.influence.estimate",
    "bootstrap_std": "confidently.influence.estimate",
    "estimate": "confidently.influence.estimate",
    "estimate_influence": "confidently.influence.estimators",
    "list_estimators": "confidently.influence.estimators",
    "register_estimator": "confidently.influence.estimators",
    "linear_datamodeling_score": "confidently.influence.lds",
    "load_holdout": "confidently.influence.lds",
    "all_outputs": "confidently.influence.outputs",
    "list_outputs": "confidently.influence.outputs",
    "register_output": "confidently.influence.outputs",
    "check_job": "confidently.influence.plan",
    "counterfactual_plan": "confidently.influence.plan",
    "parse_job_ids": "confidently.influence.plan",
    "plan_checksum": "confidently.influence.plan",
    "select_jobs": "confidently.influence.plan",
    "subset_plan": "confidently.influence.plan",
    "Recipe": "confidently.influence.recipes",
    "TaskResult": "confidently.influence.recipes",
    "list_recipes": "confidently.influence.recipes",
    "load_recipe": "confidently.influence.recipes",
    "register_recipe": "confidently.influence.recipes",
    "FarmResults": "confidently.influence.results",
    "load_results": "confidently.influence.results",
    "merge_partials": "confidently.influence.results",
    "result_files": "confidently.influence.results",
    "sum_results": "confidently.influence.results",
    "JobRunner": "confidently.influence.worker",
    "result_path": "confidently.influence.worker",
    "run_job": "confidently.influence.worker",
})
