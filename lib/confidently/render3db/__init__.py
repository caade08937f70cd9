"""3DB: debugging vision models with controlled 3D renders (thesis ch. 6).

The front door: :func:`load_experiment` reads a 3DB-style YAML experiment (objects, environments,
controls, policy, model, evaluator) and checks it against the chosen render engine; :func:`iter_jobs`
lists the planned renders with deterministic ids; :func:`run_jobs` renders and judges them through a run
engine (serial or Ray actors, one renderer per worker); the functions of :mod:`.analysis` turn the
records into the thesis' tables and heatmaps. Controls (``controls/``), policies, evaluators and render
engines (``confidently.render.engines``) are registered by name; a new one is one file.
"""

from confidently._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "accuracy_by": "confidently.render3db.analysis",
    "boxplot": "confidently.render3db.analysis",
    "confusion": "confidently.render3db.analysis",
    "heatmap": "confidently.render3db.analysis",
    "overall": "confidently.render3db.analysis",
    "stability": "confidently.render3db.analysis",
    "wilson": "confidently.render3db.analysis",
    "Experiment": "confidently.render3db.config",
    "load_experiment": "confidently.render3db.config",
    "CONTROLS": "confidently.render3db.controls",
    "Control": "confidently.render3db.controls",
    "list_controls": "confidently.render3db.controls",
    "register_control": "confidently.render3db.controls",
    "EVALUATORS": "confidently.render3db.evaluators",
    "make_evaluator": "confidently.render3db.evaluators",
    "Job": "confidently.render3db.jobs",
    "count_jobs": "confidently.render3db.jobs",
    "iter_jobs": "confidently.render3db.jobs",
    "PngWriter": "confidently.render3db.outputs",
    "ShardWriter": "confidently.render3db.outputs",
    "Accuracy": "confidently.render3db.runner",
    "RenderWorker": "confidently.render3db.runner",
    "WorkerSettings": "confidently.render3db.runner",
    "check_model": "confidently.render3db.runner",
    "model_input": "confidently.render3db.runner",
    "planned_jobs": "confidently.render3db.runner",
    "run_engine": "confidently.render3db.runner",
    "run_jobs": "confidently.render3db.runner",
    "Setting": "confidently.render3db.settings",
    "POLICIES": "confidently.render3db.space",
    "SearchSpace": "confidently.render3db.space",
    "make_policy": "confidently.render3db.space",
    "search_space": "confidently.render3db.space",
})
