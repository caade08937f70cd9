"""`render-3db`: debug a vision model with controlled 3D renders (3DB, thesis ch. 6)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from confidently import __version__
from confidently.cli import Common, common_options, examples, input_source, run_app, tool_app
from confidently.errors import UsageError
from confidently.io.atomic import claim_folder, guard_output, write_bytes_atomic, write_json_atomic
from confidently.io.records import RecordReader, RecordWriter
from confidently.run.console import console, progress

if TYPE_CHECKING:
    from confidently.render3db.config import Experiment

# torch, the render engines and confidently.render3db load inside the commands, so --help starts in a blink

app = tool_app("render-3db", "Stress-test a vision model with controlled 3D renders (3DB): pose, camera, light, "
                             "texture, background, corruptions; then analyse where it fails.")

ROOT = typer.Option(None, "--root", help="Folder relative file names in the experiment resolve against "
                                         "(default: the experiment file's folder).")
RENDERER = typer.Option(None, "--renderer", help="Render engine, overriding render_args.engine: bpy, mitsuba or "
                                                 "null (a millisecond synthetic renderer for pipeline checks).")
MODEL = typer.Option(None, "--model", help="Model file (.safetensors), overriding inference.model.")
RUN_PATHS = typer.Argument(..., metavar="EXPERIMENT.yaml | ROOT CONFIG OUTDIR",
                           help="EXPERIMENT.yaml (the toolbox's form), or 3DB's ROOT CONFIG OUTDIR: ROOT holds "
                                "blender_models/*.blend, blender_environments/*.blend|*.hdr|*.exr and "
                                "resources/*.json; records (results.jsonl), summary.json and images/ go into OUTDIR.")
VALIDATE_PATHS = typer.Argument(..., metavar="EXPERIMENT.yaml | ROOT CONFIG",
                                help="EXPERIMENT.yaml, or 3DB's ROOT CONFIG.")
MAX_RENDERS = typer.Option(100_000, "--max-renders", min=1, help="Refuse a plan with more renders unless --force.")


def experiment_from(path: Path, root: Path | None, renderer: str | None, model: Path | None,
                    threedb_root: Path | None = None) -> Experiment:
    from confidently.render3db import load_experiment

    if threedb_root is not None and root is not None:
        raise UsageError("--root is the toolbox form's; with ROOT CONFIG OUTDIR, ROOT is the first argument")
    return load_experiment(path, root=root, renderer=renderer, model=str(model) if model is not None else None,
                           threedb_root=threedb_root)


def split_paths(paths: list[Path], forms: dict[int, str]) -> tuple[Path | None, Path, Path | None]:
    """(3DB ROOT, experiment file, OUTDIR) from the positional arguments: the count says which form."""
    if len(paths) not in forms:
        raise UsageError(f"expected {' or '.join(forms.values())}; got {len(paths)} argument(s)")
    if len(paths) == 1:
        return None, paths[0], None
    return paths[0], paths[1], paths[2] if len(paths) == 3 else None


def threedb_loggers(experiment: Experiment, images_dir: Path | None, images_shard: Path | None,
                    outdir: Path | None) -> tuple[Path | None, Path | None]:
    """3DB's logger_modules as this tool's outputs: image_logger → OUTDIR/images (the toolbox form needs
    --images-dir), json_logger → the records (always written), tb_logger → OUTDIR/tensorboard (3DB's form
    only). Returns (images folder, TensorBoard folder)."""
    tensorboard = None
    if "tb_logger" in experiment.loggers:
        if outdir is not None:
            tensorboard = outdir / "tensorboard"
        else:
            console.log("[yellow]warning:[/] threedb.result_logging.tb_logger writes OUTDIR/tensorboard: run "
                        "`render-3db run ROOT CONFIG OUTDIR` for TensorBoard logs; the records hold the same data")
    if "image_logger" in experiment.loggers and images_dir is None and images_shard is None:
        if outdir is not None:
            return outdir / "images", tensorboard
        console.log("[yellow]warning:[/] threedb.result_logging.image_logger: give --images-dir DIR to keep images")
    return images_dir, tensorboard


def run_seed(experiment: Experiment, common: Common) -> int:
    """--seed when given, else render_args.seed."""
    return common.seed if "seed" in common.explicit else experiment.render_seed


def guard_size(total: int, max_renders: int, force: bool) -> None:
    if total > max_renders and not force:
        raise UsageError(f"the experiment plans {total:,} renders, more than --max-renders {max_renders:,}; narrow "
                         "the search space, raise --max-renders, or confirm with --force")


def finished_lines(path: Path) -> list[tuple[bytes, dict[str, Any] | None]]:
    """Each complete line of a (possibly killed) run's output with its record, without the records whose
    render never reached disk (their shard was not written yet); a torn last line is dropped."""
    from confidently.render3db.outputs import image_on_disk

    if not path.is_file():
        return []
    data = path.read_bytes()
    base, shard_ids, kept = path.resolve().parent, {}, []
    for line in data[:data.rfind(b"\n") + 1].splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            kept.append((line, None))
            continue
        if not isinstance(record, dict) or image_on_disk(record, base, shard_ids):
            kept.append((line, record if isinstance(record, dict) else None))
    return kept


def done_ids(path: Path) -> set[str]:
    """Ids of finished renders in an earlier run's output."""
    return {record["id"] for _, record in finished_lines(path)
            if record is not None and isinstance(record.get("id"), str) and "error" not in record
            and not record.get("planned")}


def open_output(out: Path | None, append: bool, force: bool):
    if out is None:
        return None
    if append and out.is_file():
        kept = b"".join(line for line, _ in finished_lines(out))
        if kept != out.read_bytes():  # a torn line or records whose renders were lost with the kill
            write_bytes_atomic(out, kept)
        return open(out, "a", encoding="utf-8")
    guard_output(out, "render-3db", force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    return open(out, "w", encoding="utf-8")


def image_writer(experiment: Experiment, images_dir: Path | None, images_shard: Path | None, shard_size: int | None,
                 base: Path, total: int, resume: bool, force: bool):
    from confidently.render3db import PngWriter, ShardWriter

    logging = experiment.logging
    kind = logging.get("images", "none")
    if images_dir is None and images_shard is None and kind not in (None, "none"):
        target = logging.get("path")
        if target is None:
            raise UsageError("logging.images needs logging.path (a folder for png, a file for safetensors)")
        target = Path(target) if Path(target).is_absolute() else experiment.root / target
        if kind == "png":
            images_dir = target
        elif kind == "safetensors":
            images_shard = target
        else:
            raise UsageError(f"logging.images {kind!r}: choose none, png or safetensors")
    if images_dir is not None and images_shard is not None:
        raise UsageError("give --images-dir or --images-shard, not both")
    if images_dir is not None:
        if not resume:
            claim_folder(images_dir, "render-3db", force=force)
        return PngWriter(images_dir, base)
    if images_shard is not None:
        if resume and images_shard.exists():
            raise UsageError(f"--images-shard {images_shard} exists; a resumed run writes its renders to a new shard "
                             "(give another file name)")
        guard_output(images_shard, "render-3db", force=force)
        size = shard_size or int(logging.get("shard_size", 1024))
        meta = {"classes": experiment.label_names} if experiment.label_names else {}
        return ShardWriter(images_shard, base, total=total, shard_size=size, meta=meta, keep_existing=resume)
    return None


@app.command(epilog=examples("""
    # a classifier to stress-test: a tiny ResNet on the bundled shapes (labels below are its class indices)
    advtrain train --data demo:shapes --split train --arch tiny_resnet --epochs 3 --lr 0.01 \\
      --out shapes.safetensors > shapes.metrics.jsonl
    # a cube and a mug on two backdrops, 3 headings × 3 zooms, Gaussian noise at severities 1 and 3
    printf '%s\\n' \\
      'objects: [{id: cube, builtin: cube, label: 3}, {id: mug, builtin: mug, label: 5}]' \\
      'environments: [{id: white, solid: [1, 1, 1]}, {id: checker, procedural: checker}]' \\
      'inference: {model: shapes.safetensors}' \\
      'render_args: {engine: null, resolution: 32}' \\
      'policy: {module: grid, samples_per_dim: 3}' \\
      'controls:' \\
      '  - {module: orientation, rotation_x: 0, rotation_y: 0, rotation_z: {range: [-pi, pi], endpoint: false}}' \\
      '  - {module: camera, view_point_x: 0, view_point_y: -1, view_point_z: 0.3, focal_length: 50,' \\
      '     zoom_factor: [0.8, 1.2]}' \\
      '  - {module: imagenet_c, corruption_name: gaussian_noise, severity: {values: [1, 3]}}' > scene.yaml
    # its 72 renders by the null engine (a millisecond synthetic renderer), each judged; PNGs in renders/
    render-3db run scene.yaml --out results.jsonl --images-dir renders --summary summary.json
    # the first 4 path-traced by Mitsuba 3 instead (pip install 'confidently[render]')
    render-3db run scene.yaml --renderer mitsuba --limit 4 --out mitsuba.jsonl
"""))
@common_options(uses={"seed", "device", "shard", "engine", "address", "deterministic"})
def run(paths: list[Path] = RUN_PATHS,
        root: Path = ROOT, renderer: str = RENDERER, model: Path = MODEL,
        out: Path = typer.Option(None, "--out", "-o", help="Write records here (default stdout)."),
        images_dir: Path = typer.Option(None, "--images-dir", help="Write each render as DIR/<id>_rgb.png."),
        images_shard: Path = typer.Option(None, "--images-shard", help="Write renders to safetensors shards "
                                          "(images, labels, segmentation...) that every --data option reads."),
        shard_size: int = typer.Option(None, "--shard-size", min=1, help="Renders per shard file (default 1024)."),
        no_eval: bool = typer.Option(False, "--no-eval", help="Render only: image records (with label) for other "
                                     "tools; needs --images-shard or --images-dir."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print one record per planned render; render nothing."),
        resume: Path = typer.Option(None, "--resume", help="Skip renders whose ids are in this earlier output "
                                    "(appends to it when it is also --out)."),
        limit: int = typer.Option(None, "--limit", min=1, help="Only the first N planned renders."),
        workers: int = typer.Option(None, "--workers", min=1, help="Render workers with --engine ray (default: one "
                                    "per cluster CPU / render thread)."),
        chunk_size: int = typer.Option(None, "--chunk-size", min=1, help="Renders per unit of work (default 8)."),
        max_renders: int = MAX_RENDERS,
        force: bool = typer.Option(False, "--force", help="Run a plan larger than --max-renders; write over outputs "
                                   "render-3db did not write."),
        summary: Path = typer.Option(None, "--summary", help="Write overall and per-object accuracy (JSON)."),
        *, common: Common) -> None:
    """Render every planned configuration, judge it with the model, write one record per render."""
    from confidently.render3db import (
        Accuracy,
        WorkerSettings,
        check_model,
        count_jobs,
        planned_jobs,
        run_engine,
        run_jobs,
    )
    from confidently.render3db.outputs import TensorBoardLog
    from confidently.run.device import resolve_device

    threedb_root, experiment_path, outdir = split_paths(paths, {1: "EXPERIMENT.yaml", 3: "ROOT CONFIG OUTDIR"})
    experiment = experiment_from(experiment_path, root, renderer, model, threedb_root)
    seed = run_seed(experiment, common)
    guard_size(count_jobs(experiment), max_renders, force)
    if outdir is not None and not dry_run:
        if resume is None:
            claim_folder(outdir, "render-3db", force=force)
        out, summary = out or outdir / "results.jsonl", summary or outdir / "summary.json"
    images_dir, tensorboard_dir = threedb_loggers(experiment, images_dir, images_shard, outdir)
    sha = experiment.sha256(seed)
    policy = str(experiment.policy["module"])
    if dry_run:
        writer = RecordWriter()
        for job in planned_jobs(experiment, seed, limit=limit, shard=common.shard)[0]:
            writer.write({**job.record(policy, sha), "planned": True})
        console.log(f"{writer.count} renders planned")
        return
    skip = done_ids(resume) if resume is not None else set()
    jobs, total = planned_jobs(experiment, seed, limit=limit, shard=common.shard, skip=skip)
    append = resume is not None and out is not None and out.resolve() == resume.resolve()
    base = out.resolve().parent if out is not None else Path.cwd()
    guard_output(summary, "render-3db", force=force)
    images = image_writer(experiment, images_dir, images_shard, shard_size, base, total, resume is not None, force)
    if no_eval and images is None:
        raise UsageError("--no-eval writes image records: give --images-shard FILE or --images-dir DIR")
    resolve_device(common.device)  # a device this machine lacks, before any work; each worker resolves its own
    settings = check_model(WorkerSettings(experiment, experiment.inference.get("model"), common.device, not no_eval,
                                          images is not None or tensorboard_dir is not None))
    tensorboard = None
    if tensorboard_dir is not None:
        tensorboard = TensorBoardLog(tensorboard_dir, start=len(skip))
        console.log(f"threedb.result_logging.tb_logger: TensorBoard logs in {tensorboard_dir} (view them with: "
                    f"tensorboard --logdir {tensorboard_dir})")
    engine = run_engine(experiment, common.engine, common.address, "engine" in common.explicit,
                        common.gpus_per_worker)
    stream = open_output(out, append, force)
    writer = RecordWriter(stream) if stream is not None else RecordWriter()
    accuracy = Accuracy()
    started = time.perf_counter()

    try:
        results = run_jobs(settings, jobs, engine, workers=workers or experiment.executor.get("workers"),
                           chunk_size=chunk_size or int(experiment.executor.get("chunk_size", 8)))
        for job, fields, tensors in progress(results, total, "rendering"):
            record = job.record(policy, sha)
            sha_value = record.pop("config_sha256")
            record.update(fields)
            record["config_sha256"] = sha_value
            record = images.add(record, tensors) if images is not None else record
            writer.write(record)
            accuracy.add(record)
            if tensorboard is not None:
                tensorboard.add(record, tensors)
    finally:
        try:
            if images is not None:
                images.close()
            if tensorboard is not None:
                tensorboard.close()
        finally:
            engine.close()
            if stream is not None:
                stream.close()
    elapsed = time.perf_counter() - started
    done = writer.count
    ready = engine.workers_ready  # None when no job was left to run
    timing = f"{done} renders in {elapsed:.1f} s" + (f" (workers up after {ready:.1f} s)" if ready is not None else "")
    if accuracy.n:
        console.log(f"{timing}; accuracy {accuracy.correct / accuracy.n:.3f} ({accuracy.correct}/{accuracy.n})")
    else:
        console.log(timing + (f" ({len(skip)} done before)" if skip else ""))
    if summary is not None:
        body = {"tool": "render-3db", "version": __version__, "renders": done, "skipped": len(skip),
                "config_sha256": sha, "seconds": round(elapsed, 3),
                "workers_ready_seconds": None if ready is None else round(ready, 3), **accuracy.summary()}
        write_json_atomic(summary, body)


@app.command(epilog=examples("""
    # check the experiment (controls, engine, model, labels) and count its renders, rendering nothing
    render-3db validate scene.yaml
    # the same for Mitsuba, against a stricter --max-renders (the record says whether the plan exceeds it)
    render-3db validate scene.yaml --renderer mitsuba --max-renders 50
    # the first 3 planned renders, one record each
    render-3db run scene.yaml --dry-run --limit 3
"""))
@common_options(uses={"seed"})
def validate(paths: list[Path] = VALIDATE_PATHS, root: Path = ROOT, renderer: str = RENDERER, model: Path = MODEL,
             max_renders: int = MAX_RENDERS, *, common: Common) -> None:
    """Check an experiment (base configs expanded, engine support, model and labels) and count its renders."""
    from confidently.render3db import WorkerSettings, check_model, count_jobs, search_space

    threedb_root, experiment_path, _ = split_paths(paths, {1: "EXPERIMENT.yaml", 2: "ROOT CONFIG"})
    experiment = experiment_from(experiment_path, root, renderer, model, threedb_root)
    if experiment.inference.get("model") or experiment.inference.get("class"):
        check_model(WorkerSettings(experiment, experiment.inference.get("model"), "cpu", True))
    total = count_jobs(experiment)
    seed = run_seed(experiment, common)
    space = search_space(experiment.controls)
    pairs = len(experiment.pairs())
    RecordWriter().write({
        "tool": "render-3db", "valid": True, "experiment": str(experiment_path), "renderer": experiment.renderer,
        "objects": [o.id for o in experiment.objects], "environments": [e.id for e in experiment.environments],
        "pairs": pairs, "jobs_per_pair": total // pairs if pairs else 0, "jobs": total,
        "policy": experiment.policy, "search_space": space.describe(),
        "controls": [c.name for c in experiment.controls],
        "config_sha256": experiment.sha256(seed), "seed": seed, "max_renders": max_renders,
        "exceeds_max_renders": total > max_renders})
    console.log(f"{total:,} renders ({pairs} object × environment pairs)")


@app.command(epilog=examples("""
    # every control with its parameters, default ranges and domains, one JSON line each
    render-3db controls > controls.jsonl
    # only the camera's
    render-3db controls | grep '"name":"camera"'
"""))
@common_options()
def controls(*, common: Common) -> None:
    """The controls, their kind (pre/post render), parameters, default ranges and domains (JSONL)."""
    from confidently.render3db import CONTROLS

    writer = RecordWriter()
    for name in CONTROLS.names():
        writer.write(CONTROLS.get(name).describe())


def parse_fix(values: list[str] | None) -> dict[str, str]:
    fix = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--fix {item!r}: expected PARAM=VALUE")
        fix[name.strip()] = value.strip()
    return fix


def read_results(source: str) -> list[dict[str, Any]]:
    return [r.data for r in RecordReader(input_source(source, "render-3db records"), validate=False)]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


@app.command(epilog=examples("""
    # accuracy per heading and per object × environment, with Wilson 95 % intervals
    render-3db analyze results.jsonl --by orientation.rotation_z --by object,environment > by.jsonl
    # a zoom × heading heatmap, each object's spread over environments, stability across noise severities;
    # the matrices in heatmaps.safetensors, PNG charts in charts/
    render-3db analyze results.jsonl --heatmap camera.zoom_factor,orientation.rotation_z \\
      --boxplot object,environment --stability imagenet_c.severity --tensors heatmaps.safetensors \\
      --plots charts > analysis.jsonl
    # physical realism: 5 right and 5 wrong renders per object to photograph (ids, parameters, images); the
    # photos' outcomes then go to --agreement, and the thesis' other studies need uv/segmentation passes (README)
    render-3db analyze results.jsonl --select-physical 5 > to_photograph.jsonl
    # 3DB's dashboard panels (failure modes, per object, aggregate trends) drawn by `report` with the records
    render-3db analyze results.jsonl --report > panels.jsonl && report results.jsonl panels.jsonl --out site
"""))
@common_options(uses={"seed"})
def analyze(source: str = typer.Argument(None, help="Records of `render-3db run` (file, or - / stdin)."),
            by: list[str] = typer.Option(None, "--by", help="Accuracy per value of PARAM (or P1,P2 jointly); repeat."),
            bins: int = typer.Option(None, "--bins", min=1, help="Equal-width bins for continuous parameters "
                                     "(default: exact values when few, else 10)."),
            heatmaps: list[str] = typer.Option(None, "--heatmap", help="Mean accuracy grid over P1,P2; repeat."),
            fix: list[str] = typer.Option(None, "--fix", help="Heatmaps: slice at PARAM=VALUE; repeat."),
            boxplots: list[str] = typer.Option(None, "--boxplot", help="ROW,COL: per ROW, the spread of per-COL "
                                               "accuracies (e.g. object,environment); repeat."),
            stable: list[str] = typer.Option(None, "--stability", help="Fraction of settings whose top-1 prediction "
                                             "never changes across PARAM; repeat."),
            confusions: list[str] = typer.Option(None, "--confusion", help="Prediction counts per PARAM value."),
            complexity: bool = typer.Option(False, "--background-complexity", help="Per environment: edge "
                                            "complexity of the background (mean Sobel magnitude of the renders' "
                                            "background pixels, in [0, 1]; needs the segmentation pass) against "
                                            "accuracy, with Spearman's and Pearson's r."),
            backgrounds: Path = typer.Option(None, "--backgrounds", help="--background-complexity from image files "
                                             "DIR/<environment>.png|.jpg instead of the renders.", file_okay=False),
            texture_bias: bool = typer.Option(False, "--texture-bias", help="For renders with a swapped material "
                                              "or texture: how often the prediction is the texture's class vs "
                                              "the shape's, and the accuracy drop on renders whose original-"
                                              "texture counterpart was right (needs --texture-labels)."),
            texture_labels: Path = typer.Option(None, "--texture-labels", help="JSON object: texture (swap value "
                                                "or file name) → class index or list.", dir_okay=False),
            uv: bool = typer.Option(False, "--uv-heatmap", help="Accuracy per texel of --object's UV map over the "
                                    "renders where it is visible (needs the uv and segmentation passes in a "
                                    "shard); tensor uv_accuracy in --tensors, PNG in --plots."),
            uv_object: str = typer.Option(None, "--object", help="--uv-heatmap: the object id."),
            tex_size: int = typer.Option(256, "--tex-size", min=1, help="--uv-heatmap: texels per side."),
            physical: int = typer.Option(None, "--select-physical", min=1, help="Per object, K correctly and K "
                                         "wrongly classified renders to recreate as photos (drawn by --seed)."),
            real: Path = typer.Option(None, "--agreement", help="JSONL of photo outcomes {id: render id, "
                                      "is_correct}: agreement, PPV and NPV per object.", dir_okay=False),
            panels: bool = typer.Option(False, "--report", help="3DB's dashboard panels as rows (analysis "
                                        "\"report\"): failure modes (the lowest-accuracy control values, "
                                        "scenes and configurations), per object (accuracy and sensitivity to "
                                        "each control group) and aggregate trends; `report` draws them."),
            tensors: Path = typer.Option(None, "--tensors", help="Write heatmaps (acc, n; uv_accuracy) to this "
                                         ".safetensors."),
            plots: Path = typer.Option(None, "--plots", help="Write PNG charts into this folder."),
            force: bool = typer.Option(False, "--force", help="Write over a --tensors file or into a non-empty "
                                       "--plots folder render-3db did not write."),
            *, common: Common) -> None:
    """Accuracy per control value, interaction heatmaps, box plots, prediction stability, background complexity,
    texture vs shape bias, UV heat maps, renders to photograph, agreement with the photos and 3DB's dashboard
    panels (JSONL rows; `report` draws them)."""
    import torch
    from confidently.io.artifacts import artifact_metadata, save_artifact
    from confidently.render3db import accuracy_by, boxplot, confusion, heatmap, overall, stability
    from confidently.render3db import analysis_studies as studies
    from confidently.render3db.analysis import plot_boxplot, plot_by, plot_heatmap
    from confidently.render3db.analysis_images import background_complexity, plot_complexity, plot_uv, uv_heatmap
    from confidently.render3db.analysis_report import dashboard_panels, plot_aggregate, plot_per_object

    if texture_bias != (texture_labels is not None):
        raise UsageError("--texture-bias and --texture-labels go together: the labels say which class each "
                         "texture is")
    if uv != (uv_object is not None):
        raise UsageError("--uv-heatmap and --object go together: the heat map is of one object's surface")
    if backgrounds is not None and not complexity:
        raise UsageError("--backgrounds only serves --background-complexity")
    labels = studies.read_texture_labels(texture_labels) if texture_labels is not None else None
    photos = studies.read_real(real) if real is not None else None
    guard_output(tensors, "render-3db", force=force)
    guard_output(plots, "render-3db", force=force)
    source = input_source(source, "render-3db records")
    base = Path(source).resolve().parent if source != "-" else Path.cwd()
    records = read_results(source)
    any_study = complexity or texture_bias or uv or panels or physical is not None or real is not None
    writer = RecordWriter()
    writer.write(overall(records))
    if plots is not None:
        claim_folder(plots, "render-3db", force=force)
    arrays: dict[str, torch.Tensor] = {}
    axes: dict[str, Any] = {}
    for param in by or ([] if heatmaps or boxplots or stable or confusions or any_study else ["object"]):
        rows = accuracy_by(records, param, bins)
        writer.write_all(rows)
        if plots is not None and rows:
            plot_by(rows, str(plots / f"by_{slug(rows[0]['param'])}.png"))
    for pair in heatmaps or []:
        grid = heatmap(records, pair, parse_fix(fix), bins)
        writer.write_all(grid["rows"])
        name = ",".join(grid["params"])
        arrays[f"heatmap/{name}/acc"] = torch.tensor(grid["acc"], dtype=torch.float32)
        arrays[f"heatmap/{name}/n"] = torch.tensor(grid["n"], dtype=torch.int64)
        axes[name] = {"rows": grid["params"][0], "cols": grid["params"][1], "row_values": grid["x"],
                      "col_values": grid["y"], "fix": grid["fix"]}
        if plots is not None:
            plot_heatmap(grid, str(plots / f"heatmap_{slug(grid['params'][0])}_{slug(grid['params'][1])}.png"))
    for pair in boxplots or []:
        rows = boxplot(records, pair, bins)
        writer.write_all(rows)
        if plots is not None and rows:
            plot_boxplot(rows, str(plots / f"boxplot_{slug(rows[0]['row'])}_{slug(rows[0]['col'])}.png"))
    for param in stable or []:
        writer.write(stability(records, param))
    for param in confusions or []:
        writer.write_all(confusion(records, param))
    if complexity:
        rows = background_complexity(records, base, backgrounds)
        writer.write_all(rows)
        if plots is not None:
            plot_complexity(rows, str(plots / "background_complexity.png"))
    if labels is not None:
        rows = studies.texture_bias(records, labels)
        writer.write_all(rows)
        if plots is not None:
            for param in dict.fromkeys(r["param"] for r in rows):
                studies.plot_texture_bias([r for r in rows if r["param"] == param],
                                          str(plots / f"texture_bias_{slug(param)}.png"))
    if uv:
        result = uv_heatmap(records, base, uv_object, tex_size)
        writer.write({**result["row"], **({"tensors": str(tensors)} if tensors is not None else {})})
        arrays["uv_accuracy"] = result["acc"].float()
        arrays["uv_visible"], arrays["uv_correct"] = result["visible"], result["correct"]
        axes["uv_accuracy"] = {"object": uv_object, "rows": "v", "cols": "u", "tex_size": tex_size}
        if plots is not None:
            plot_uv(result, str(plots / f"uv_accuracy_{slug(uv_object)}.png"))
    if physical is not None:
        writer.write_all(studies.select_physical(records, physical, common.seed))
    if photos is not None:
        rows = studies.agreement(records, photos)
        writer.write_all(rows)
        if plots is not None:
            studies.plot_agreement(rows, str(plots / "agreement.png"))
    if panels:
        rows = dashboard_panels(records, bins)
        writer.write_all(rows)
        if plots is not None:
            plot_per_object([r for r in rows if r["panel"] == "per_object"], str(plots / "report_per_object.png"))
            plot_aggregate([r for r in rows if r["panel"] == "aggregate"], str(plots / "report_aggregate.png"))
    if tensors is not None:
        if not arrays:
            raise UsageError("--tensors holds heatmaps: add --heatmap P1,P2 or --uv-heatmap")
        save_artifact(tensors, arrays, artifact_metadata(tool="render-3db", kind="heatmaps", axes=axes))
    if plots is not None:
        console.log(f"charts in {plots}")


@app.command(epilog=examples("""
    # a run with its renders as PNGs, then 3DB's log layout for it (details.log, images/, class_maps.json)
    render-3db run scene.yaml --out results.jsonl --images-dir renders
    render-3db dashboard results.jsonl board
    # then serve it with 3DB's dashboard (pip install 'confidently[threedboard]') and open http://localhost:8001:
    #   python -m threedboard board --port 8001 --no-browser
"""))
@common_options()
def dashboard(source: str = typer.Argument(None, help="Records of `render-3db run` with images (file, or - / "
                                           "stdin; image paths are relative to the file's folder)."),
              outdir: Path = typer.Argument(..., help="Folder for 3DB's dashboard: details.log, images/, "
                                            "class_maps.json.", file_okay=False),
              class_map: Path = typer.Option(None, "--class-map", help="JSON array of class names by index "
                                             "(3DB's label_map; default: the indices)."),
              force: bool = typer.Option(False, "--force", help="Write into a non-empty folder render-3db did "
                                         "not write."),
              *, common: Common) -> None:
    """Write a run's records and renders as 3DB's log folder, for 3DB's dashboard (`python -m threedboard`)."""
    from confidently.render3db.dashboard import write_dashboard

    names = None
    if class_map is not None:
        try:
            names = json.loads(class_map.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--class-map {class_map}: not a readable JSON file ({exc})") from None
        if not isinstance(names, list):
            raise UsageError(f"--class-map {class_map}: expected a JSON array of class names")
    source = input_source(source, "render-3db records")
    base = Path(source).resolve().parent if source != "-" else Path.cwd()
    counts = write_dashboard(read_results(source), base, outdir, class_map=names, force=force)
    console.log(f"{counts['renders']} renders in {outdir}" + (f" ({counts['skipped']} records without a judged "
                                                              "render left out)" if counts["skipped"] else "")
                + f"; view them with: python -m threedboard {outdir} --no-browser")


EXPERIMENT_KEYS = {"objects", "controls", "base_config", "environments", "policy", "render_args"}


def _experiment_flag_to_argument(argv: list[str]) -> list[str]:
    """3DB habit: `render-3db run --config exp.yaml`. The shared --config sets option defaults, so an
    experiment file given that way is moved to the positional argument."""
    out = list(argv)
    for i, arg in enumerate(out):
        path = out[i + 1] if arg == "--config" and i + 1 < len(out) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if path is None:
            continue
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            return out
        if isinstance(data, dict) and EXPERIMENT_KEYS & set(data):
            del out[i:i + (2 if arg == "--config" else 1)]
            command = next((j for j, a in enumerate(out) if a in ("run", "validate")), None)
            if command is not None:
                out.insert(command + 1, path)
        return out
    return out


def main() -> None:
    argv = _experiment_flag_to_argument(sys.argv[1:])
    run_app(app, "render-3db", argv)


if __name__ == "__main__":
    main()
