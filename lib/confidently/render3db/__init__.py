"""3DB: debugging vision models with controlled 3D renders (thesis ch. 6).

The front door: :func:`load_experiment` reads a 3DB-style YAML experiment (objects, environments,
controls, policy, model, evaluator) and checks it against the chosen render engine; :func:`iter_jobs`
lists the planned renders with deterministic ids; :func:`run_jobs` renders and judges them through a run
engine (serial or Ray actors, one renderer per worker); the functions of :mod:`.analysis` turn the
records into the thesis' tables and heatmaps. Controls (``controls/``), policies, evaluators and render
engines (``confidently.render.engines``) are registered by name; a new one is one file.
"""

from confidently.render3db.analysis import (
    accuracy_by,
    boxplot,
    confusion,
    heatmap,
    overall,
    stability,
    wilson,
)
from confidently.render3db.config import Experiment, load_experiment
from confidently.render3db.controls import CONTROLS, Control, list_controls, register_control
from confidently.render3db.evaluators import EVALUATORS, make_evaluator
from confidently.render3db.jobs import Job, count_jobs, iter_jobs
from confidently.render3db.outputs import PngWriter, ShardWriter
from confidently.render3db.runner import (
    Accuracy,
    RenderWorker,
    WorkerSettings,
    check_model,
    model_input,
    planned_jobs,
    run_engine,
    run_jobs,
)
from confidently.render3db.settings import Setting
from confidently.render3db.space import POLICIES, SearchSpace, make_policy, search_space

__all__ = [
    "Accuracy", "CONTROLS", "Control", "EVALUATORS", "Experiment", "Job", "POLICIES", "PngWriter", "RenderWorker",
    "SearchSpace", "Setting", "ShardWriter", "WorkerSettings", "accuracy_by", "boxplot", "check_model", "confusion",
    "count_jobs", "heatmap", "iter_jobs", "list_controls", "load_experiment", "make_evaluator", "make_policy",
    "model_input", "overall", "planned_jobs", "register_control", "run_engine", "run_jobs", "search_space",
    "stability", "wilson",
]
