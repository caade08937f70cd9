"""3DB's tb_logger: `render-3db run ROOT CONFIG OUTDIR` writes TensorBoard events under OUTDIR/tensorboard that
TensorBoard's own reader finds: the running accuracy and every render, tagged by its object, as the records say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from confidently.io.images import decode_file

CONFIG = {  # 3DB's format; the environment narrowed to a solid so the null engine draws the run in milliseconds
    "inference": {"module": "torchvision.models", "class": "resnet18", "resolution": [32, 32],
                  "args": {"pretrained": False, "num_classes": 10}},
    "evaluation": {"module": "threedb.evaluators.classification",
                   "args": {"classmap_path": "./resources/classmap.json", "topk": 1}},
    "render_args": {"engine": "null", "resolution": 32, "samples": 2},
    "environments": [{"id": "grey", "solid": [0.5, 0.5, 0.5]}],
    "policy": {"module": "threedb.policies.grid_search", "samples_per_dim": 3},
    "controls": [{"module": "threedb.controls.blender.orientation", "rotation_x": 0, "rotation_y": 0,
                  "rotation_z": "(-3.14, 3.14)"}],
    "logging": {"logger_modules": ["threedb.result_logging.image_logger", "threedb.result_logging.json_logger",
                                   "threedb.result_logging.tb_logger"]},
}


@pytest.fixture
def threedb_root(tmp_path):
    """3DB's ROOT: two models (the null engine hashes a model file, never parses it: no Blender needed) and the
    class map."""
    root = tmp_path / "ROOT"
    (root / "blender_models").mkdir(parents=True)
    (root / "resources").mkdir()
    for uid in ("cube", "ball"):
        (root / "blender_models" / f"{uid}.blend").write_bytes(f"stand-in for {uid}".encode())
    (root / "resources" / "classmap.json").write_text(json.dumps({"cube": 3, "ball": 6}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return root


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def test_the_tensorboard_log_holds_the_runs_accuracy_and_renders(threedb_root, run_tool, tmp_path):
    pytest.importorskip("tensorboard")
    done = run_tool("render-3db", "run", threedb_root, "config.yaml", "out")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out/results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3
    assert len(list((tmp_path / "out/tensorboard").glob("events.out.tfevents.*"))) == 1
    log = events(tmp_path / "out/tensorboard")
    running = np.cumsum([r["is_correct"] for r in records]) / np.arange(1, len(records) + 1)
    scalars = log.Scalars("Accuracy")
    assert [s.step for s in scalars] == list(range(1, len(records) + 1))
    assert np.allclose([s.value for s in scalars], running)
    for uid in ("cube", "ball"):
        mine = [(step, r) for step, r in enumerate(records, 1) if r["object"] == uid]
        images = log.Images(uid)
        assert [i.step for i in images] == [step for step, _ in mine]
        for image, (_, record) in zip(images, mine, strict=True):  # the stored render, pixel for pixel
            stored = decode_file(tmp_path / "out" / record["image"]).mul(255).round().byte()
            assert (image.width, image.height) == (32, 32)
            assert _png_pixels(image.encoded_image_string) == stored.tolist()
        texts = log.Tensors(f"{uid}/text_summary")
        said = [json.loads(t.tensor_proto.string_val[0].decode().strip("`")) for t in texts]
        assert [s["id"] for s in said] == [r["id"] for _, r in mine]
        assert [s["render_args"] for s in said] == [r["render_args"] for _, r in mine]
        assert [s["is_correct"] for s in said] == [r["is_correct"] for _, r in mine]
    # a resumed run adds its steps after the earlier ones; a fresh run replaces them rather than mixing two runs
    from confidently.render3db.outputs import TensorBoardLog

    earlier = set((tmp_path / "out/tensorboard").glob("events.out.tfevents.*"))
    resumed = TensorBoardLog(tmp_path / "out/tensorboard", start=len(records))
    resumed.add({**records[0], "is_correct": True}, {})
    resumed.close()
    assert earlier < set((tmp_path / "out/tensorboard").glob("events.out.tfevents.*"))
    assert events(tmp_path / "out/tensorboard").Scalars("Accuracy")[-1].step == len(records) + 1
    fresh = TensorBoardLog(tmp_path / "out/tensorboard")
    fresh.add({**records[0], "is_correct": False}, {})
    fresh.close()
    assert [(s.step, s.value) for s in events(tmp_path / "out/tensorboard").Scalars("Accuracy")] == [(1, 0.0)]


def _png_pixels(data: bytes) -> list:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).tolist()


def test_without_tensorboard_the_logger_names_the_install(tmp_path, monkeypatch):
    import builtins

    from confidently.errors import MissingBackend
    from confidently.render3db import outputs

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(MissingBackend, match=r"pip install tensorboard"):
        outputs.TensorBoardLog(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()
