"""The detection evaluator: boxes from the segmentation pass, NMS, IoU hits, precision/recall and their
thresholds on hand-made boxes; and a torchvision detector judged through the render path."""

from __future__ import annotations

import pytest
import torch
from confidently.errors import UsageError
from confidently.render3db import WorkerSettings, check_model, iter_jobs, load_experiment
from confidently.render3db.evaluators import DetectionEvaluator, ground_truth_boxes, make_evaluator
from confidently.render3db.runner import RenderWorker
from confidently.schema import schema_errors


def evaluator(**args) -> DetectionEvaluator:
    return DetectionEvaluator(**{"iou_threshold": 0.5, "nms_threshold": 0.5, "max_num_boxes": 10, **args})


def seg_map(size: int = 8, **objects: tuple[int, int, int, int]) -> torch.Tensor:
    """A 1×size×size map, −1 background; ``label_N=(x1, y1, x2, y2)`` fills pixel columns x1..x2-1, rows y1..y2-1."""
    seg = torch.full((1, size, size), -1, dtype=torch.int32)
    for name, (x1, y1, x2, y2) in objects.items():
        seg[0, y1:y2, x1:x2] = int(name.split("_")[1])
    return seg


def predict(*rows: tuple[float, float, float, float, float, int]) -> dict[str, torch.Tensor]:
    """Detections as a torchvision detector returns them: (x1, y1, x2, y2, score, label) in input pixels."""
    t = torch.tensor([r[:5] for r in rows], dtype=torch.float32).reshape(-1, 5)
    return {"boxes": t[:, :4], "scores": t[:, 4], "labels": torch.tensor([r[5] for r in rows], dtype=torch.int64)}


def test_ground_truth_is_one_tight_box_per_label_with_pixel_edges():
    boxes, labels = ground_truth_boxes(seg_map(label_3=(1, 2, 4, 8), label_5=(6, 0, 7, 1)))
    assert labels.tolist() == [3, 5]
    assert boxes.tolist() == [[1 / 8, 2 / 8, 4 / 8, 1.0], [6 / 8, 0.0, 7 / 8, 1 / 8]]
    empty, none = ground_truth_boxes(seg_map())
    assert empty.shape == (0, 4) and none.numel() == 0


def test_a_hit_needs_iou_above_the_threshold_and_the_same_label():
    seg = seg_map(label_2=(0, 0, 4, 4))  # the box [0, 0, 0.5, 0.5]
    half = predict((0, 0, 4, 2, 0.9, 2))  # IoU exactly 0.5 with the object, in 8×8 input pixels
    assert evaluator(iou_threshold=0.5).evaluate_boxes(half, seg, (8, 8))["recall"] == 0.0  # not above 0.5
    assert evaluator(iou_threshold=0.49).evaluate_boxes(half, seg, (8, 8))["recall"] == 1.0
    wrong = evaluator().evaluate_boxes(predict((0, 0, 4, 4, 0.9, 7)), seg, (8, 8))
    assert (wrong["precision"], wrong["recall"], wrong["is_correct"]) == (0.0, 0.0, False)
    assert (wrong["precision_nolabel"], wrong["recall_nolabel"], wrong["is_correct_nolabel"]) == (1.0, 1.0, True)
    assert wrong["is_valid"] is True
    # the model's input may be larger than the render: boxes compare normalised
    assert evaluator().evaluate_boxes(predict((0, 0, 16, 16, 0.9, 2)), seg, (32, 32))["recall"] == 1.0


def test_nms_threshold_decides_whether_a_duplicate_counts_as_a_false_positive():
    seg = seg_map(label_1=(0, 0, 4, 4))
    found = predict((0, 0, 4, 4, 0.9, 1), (1, 1, 5, 5, 0.6, 1))  # IoU 9/23 with each other and with the object
    strict = evaluator(nms_threshold=0.3).evaluate_boxes(found, seg, (8, 8))
    loose = evaluator(nms_threshold=0.5).evaluate_boxes(found, seg, (8, 8))
    assert len(strict["boxes"]) == 1 and strict["precision"] == 1.0
    assert len(loose["boxes"]) == 2 and loose["precision"] == 0.5 and loose["recall"] == 1.0


def test_precision_and_recall_thresholds_make_is_correct():
    seg = seg_map(label_1=(0, 0, 4, 4), label_2=(4, 4, 8, 8))
    found = predict((0, 0, 4, 4, 0.9, 1), (0, 5, 2, 8, 0.8, 1))  # one object found, one box on nothing
    result = evaluator().evaluate_boxes(found, seg, (8, 8))
    assert (result["precision"], result["recall"]) == (0.5, 0.5)
    assert result["is_correct"] is False  # 3DB's default min_recall 1.0
    assert evaluator(min_recall=0.5).evaluate_boxes(found, seg, (8, 8))["is_correct"] is True
    assert evaluator(min_recall=0.5, min_precision=0.6).evaluate_boxes(found, seg, (8, 8))["is_correct"] is False
    nothing = evaluator().evaluate_boxes(predict(), seg_map(), (8, 8))
    assert nothing["is_valid"] is False and nothing["boxes"] == []


def test_boxes_are_capped_by_score_and_normalised():
    seg = seg_map(label_1=(0, 0, 4, 4))
    found = predict((4, 4, 8, 8, 0.2, 1), (0, 0, 8, 4, 0.7, 3), (0, 0, 4, 4, 0.9, 1))
    result = evaluator(max_num_boxes=2).evaluate_boxes(found, seg, (8, 16))  # input 8 high, 16 wide
    assert result["boxes"] == [[0.0, 0.0, 0.25, 0.5, 0.9, 1], [0.0, 0.0, 0.5, 0.5, pytest.approx(0.7), 3]]
    assert result["output_type"] == "bboxes"


def test_missing_3db_arguments_warn_and_take_3dbs_defaults():
    with pytest.warns(UserWarning) as caught:
        tolerant = make_evaluator({"module": "detection", "args": {"iou_threshold": 0.6}})
    said = " ".join(str(c.message) for c in caught)
    assert "no nms_threshold" in said and "no max_num_boxes" in said
    assert (tolerant.nms_threshold, tolerant.max_num_boxes, tolerant.min_recall, tolerant.min_precision) == \
        (0.6, 100, 1.0, 0.0)
    with pytest.raises(UsageError, match="valid: iou_threshold"):
        evaluator(topk=1)
    with pytest.raises(UsageError, match="iou_threshold"):
        evaluator(iou_threshold=1.5)


def test_a_torchvision_detector_is_judged_against_the_render_segmentation(experiment_file):
    """Through the null engine's render path: the evaluator asks for the segmentation pass the config did not."""
    path = experiment_file(
        objects=[{"id": "ball", "builtin": "sphere", "label": 1}],
        environments=[{"id": "grey", "solid": [0.5, 0.5, 0.5]}],
        inference={"module": "torchvision.models.detection", "class": "fasterrcnn_mobilenet_v3_large_320_fpn",
                   "args": {"num_classes": 3, "box_score_thresh": 0.0, "box_detections_per_img": 20},
                   "resolution": [64, 64], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}},
        evaluation={"module": "threedb.evaluators.detection",
                    "args": {"iou_threshold": 0.3, "nms_threshold": 0.5, "max_num_boxes": 5, "min_recall": 0.0}},
        policy={"module": "grid", "samples_per_dim": 2},
        controls=[{"module": "camera", "view_point_x": 0, "view_point_y": -1, "view_point_z": 0.3,
                   "zoom_factor": [0.8, 1.2]}])
    experiment = load_experiment(path)
    assert experiment.render.with_segmentation is False
    settings = check_model(WorkerSettings(experiment, None, "cpu", True, True))
    torch.manual_seed(0)
    worker = RenderWorker(settings)  # an untrained detector: its boxes land anywhere
    jobs = list(iter_jobs(experiment, 0))
    results = [(job, *result) for job, result in zip(jobs, worker(jobs), strict=True)]
    assert len(results) == len(jobs) >= 2
    for job, fields, tensors in results:
        seg = tensors["segmentation"]
        assert fields["output_type"] == "bboxes" and fields["is_valid"] is True
        assert set(seg.unique().tolist()) == {-1, 1}
        assert len(fields["boxes"]) <= 5
        assert all(0 <= v <= 1 for box in fields["boxes"] for v in box[:4]) and fields["boxes"]
        assert fields["is_correct"] is True  # min_recall 0, min_precision 0
        assert schema_errors({**job.record("grid", "0" * 64), **fields}, "render-3db-record") == []
        # the record is the evaluator's answer on the stored render, judged again
        again = worker.judge(tensors, job)
        assert {k: again[k] for k in ("precision", "recall", "boxes")} == \
            {k: fields[k] for k in ("precision", "recall", "boxes")}
