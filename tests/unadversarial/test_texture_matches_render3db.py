"""What `unadv-patch texture` optimises is what `render-3db` evaluates: the texture renderer draws through
render-3db's mitsuba engine (its camera, path tracer and sRGB view transform), so frames of the same view agree
within sampling noise, and so do a texture's per-view predictions and accuracy under `eval-texture`'s code and
under `render-3db run`."""

import itertools
import json
import math

import pytest
import torch
import yaml

from tests.render.textures import quadrants

pytest.importorskip("mitsuba")
pytestmark = pytest.mark.render

LIGHT = 0.7
ZOOMS = (0.8, 1.3)
VIEW_POINTS = list(itertools.product((-0.9, -0.3, 0.4, 0.9), (-1.0, 1.0), (0.2, 0.8)))


class FixedViews:
    """The views render-3db's grid visits, in its order, for `evaluate_textures` (which draws from a sampler)."""

    def __init__(self, views):
        self.views = views

    def sample(self, count, generator):
        assert count == len(self.views)
        return list(self.views)


def view_of(point, zoom, renderer):
    from confidently.render import View
    from confidently.render.engines.procedural import MARGIN, fov_radians

    norm = math.sqrt(sum(c * c for c in point))
    distance = MARGIN / math.sin(fov_radians(renderer.focal_length) / 2) / zoom
    return View(tuple(c / norm for c in point), distance, LIGHT, (0.0, 0.0))


@pytest.fixture(scope="module")
def cube():
    from confidently.render import MitsubaRenderer

    return MitsubaRenderer("builtin:cube", 8, 32, spp=16)


def test_frames_of_a_view_match_render3db_engine(cube):
    from confidently.render.engines.mitsuba_engine import MitsubaEngine
    from confidently.render.scene import EnvironmentSpec, ObjectSpec, RenderArgs
    from confidently.unadversarial.texture import BACKGROUNDS, render_batch

    texture = quadrants(8)
    views = [view_of(p, z, cube) for p, z in zip(VIEW_POINTS[::3], itertools.cycle(ZOOMS))]
    ours = render_batch(cube, texture, views, list(range(len(views))),
                        BACKGROUNDS.get("environment")(views, 3, 32, torch.Generator()))
    engine = MitsubaEngine()
    engine.load(ObjectSpec("cube", 1, builtin="cube"), EnvironmentSpec("white", solid=(1.0, 1.0, 1.0)),
                RenderArgs(resolution=32, samples=16))
    for seed, (view, frame) in enumerate(zip(views, ours, strict=True)):
        state = cube.scene_state(view)  # light = the view's radiance, times the white environment
        state.texture = texture
        same_samples, other_samples = engine.render(state, seed)["rgb"], engine.render(state, seed + 100)["rgb"]
        assert (frame - same_samples).abs().mean() < 0.015, view  # edge pixels only (linear light: ~0.15)
        noise = (same_samples - other_samples).abs().mean()
        assert (frame - other_samples).abs().mean() < noise + 0.015, view


@pytest.fixture(scope="module")
def zoom_model(cube):
    """A tiny ResNet that tells the grid's two zooms apart on these renders: its predictions vary by view,
    so agreement between the two renderers' predictions means something (a digits model calls every
    out-of-distribution cube the same digit)."""
    from confidently.data.dataset import ImageDataset
    from confidently.models import create_model
    from confidently.training import TrainConfig, train_classifier
    from confidently.unadversarial.texture import BACKGROUNDS, render_batch

    views = [view_of(p, z, cube) for p in VIEW_POINTS for z in ZOOMS]
    with torch.no_grad():
        frames = render_batch(cube, quadrants(8), views, list(range(len(views))),
                              BACKGROUNDS.get("environment")(views, 3, 32, None))
    labels = torch.tensor([ZOOMS.index(z) for _ in VIEW_POINTS for z in ZOOMS])
    torch.manual_seed(0)
    model = create_model("tiny_resnet", 2)
    train_classifier(model, ImageDataset.from_tensors(frames, labels), TrainConfig(epochs=30, lr=3e-3, batch_size=16))
    return model.eval()


def test_eval_texture_and_render3db_agree_on_predictions_and_accuracy(cube, zoom_model, run_tool, tmp_path):
    from confidently.models import save_model
    from confidently.unadversarial import evaluate_textures, save_texture
    from confidently.unadversarial.texture import BACKGROUNDS, render_batch

    trained_resnet = zoom_model
    texture, label = quadrants(8), 1
    save_model(trained_resnet, tmp_path / "model.safetensors")
    save_texture(tmp_path / "tex.safetensors", texture[None], [label], {"tool": "unadv-patch"})
    experiment = {
        "objects": [{"id": "cube", "builtin": "cube", "label": label}],
        "environments": [{"id": "grey", "solid": [LIGHT] * 3}],
        "inference": {"model": "model.safetensors"},
        "evaluation": {"module": "classification", "args": {"topk": 1}},
        "render_args": {"engine": "mitsuba", "resolution": 32, "samples": 16},
        "policy": {"module": "grid", "samples_per_dim": 1},
        "controls": [{"module": "camera", "view_point_x": {"values": sorted({p[0] for p in VIEW_POINTS})},
                      "view_point_y": {"values": sorted({p[1] for p in VIEW_POINTS})},
                      "view_point_z": {"values": sorted({p[2] for p in VIEW_POINTS})},
                      "zoom_factor": {"values": list(ZOOMS)}, "focal_length": 50},
                     {"module": "texture", "source": "tex.safetensors"}],
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    done = run_tool("render-3db", "run", "exp.yaml", "--out", "results.jsonl", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(VIEW_POINTS) * len(ZOOMS)
    points = [tuple(r["render_args"][f"camera.view_point_{a}"] for a in "xyz") for r in rows]
    views = [view_of(p, r["render_args"]["camera.zoom_factor"], cube) for p, r in zip(points, rows, strict=True)]
    theirs = [r["prediction"][0] for r in rows]

    backgrounds = BACKGROUNDS.get("environment")
    with torch.no_grad():
        scenes = render_batch(cube, texture, views, list(range(len(views))), backgrounds(views, 3, 32, None))
        ours = trained_resnet.eval()(scenes).argmax(1).tolist()
    assert len(set(theirs)) > 1  # the views disagree among themselves, so the comparison means something
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True)) / len(views)
    assert agree >= 0.85, (ours, theirs)

    (row,) = evaluate_textures(trained_resnet, cube, label, {"unadv": texture}, FixedViews(views), backgrounds,
                               len(views), [], [], seed=3)
    accuracy_3db = sum(r["is_correct"] for r in rows) / len(rows)
    assert abs(row["acc"] - accuracy_3db) <= 3 / len(views), (row, accuracy_3db)
