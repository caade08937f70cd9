"""Evaluators: turn a model's output on one render into the record's judgement.

``classification`` (3DB's defaults): ``is_correct`` when any of the top-k predictions is one of the
object's labels, ``loss`` = −log of the probability given to the labels (the cross-entropy for one
label), ``prediction`` = the top-k class indices, ``scores`` = their probabilities. A custom evaluator
is ``py:module:Class``: ``Class(**args)`` with ``evaluate(logits 1×K, labels) -> dict``.

``detection`` (3DB's ``SimpleDetectionEvaluator``) judges a torchvision-style detector (one dict of ``boxes``,
``scores``, ``labels`` per image) against the render's segmentation pass: it declares ``needs =
("segmentation",)`` and ``output_type = "bboxes"``, and the worker calls ``evaluate_boxes`` instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from confidently.errors import UsageError
from confidently.registry import Registry

EVALUATORS: Registry[type] = Registry("evaluator")


@EVALUATORS.register("classification")
class ClassificationEvaluator:
    output_type = "classes"

    def __init__(self, topk: int = 1, **extra: Any):
        if extra:
            raise UsageError(f"evaluation classification: unknown argument(s) {', '.join(sorted(extra))}; "
                             "valid: topk")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise UsageError(f"evaluation classification: topk must be an integer >= 1, got {topk!r}")
        self.topk = topk

    def check(self, num_classes: int, labels: list[int]) -> None:
        if self.topk > num_classes:
            raise UsageError(f"evaluation: topk {self.topk} exceeds the model's {num_classes} classes")
        bad = [label for label in labels if label >= num_classes]
        if bad:
            raise UsageError(f"object label(s) {bad} but the model has {num_classes} classes (0..{num_classes - 1})")

    def evaluate(self, logits: torch.Tensor, labels: list[int]) -> dict[str, Any]:
        logits = logits.reshape(-1).double()
        log_probs = torch.log_softmax(logits, 0)
        scores, prediction = log_probs.exp().topk(self.topk)
        wanted = torch.tensor(labels, dtype=torch.long)
        loss = -float(torch.logsumexp(log_probs[wanted], 0))
        return {"is_correct": bool(set(prediction.tolist()) & set(labels)), "loss": loss,
                "prediction": [int(p) for p in prediction], "scores": [float(s) for s in scores],
                "output_type": self.output_type}


BACKGROUND = -1  # the segmentation pass's value where no object is


def ground_truth_boxes(segmentation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One tight box per object label in a segmentation map (1×H×W or H×W, −1 background), as 3DB derives
    its targets: ``(boxes K×4 [x1, y1, x2, y2] normalised by the map's width and height, labels K)``.
    Box edges are pixel edges: a single pixel at (x, y) is the box [x/W, y/H, (x+1)/W, (y+1)/H]."""
    seg = segmentation.reshape(segmentation.shape[-2:])
    height, width = seg.shape
    labels = [int(v) for v in torch.unique(seg) if int(v) != BACKGROUND]
    boxes = []
    for label in labels:
        rows, cols = torch.where(seg == label)
        boxes.append([int(cols.min()) / width, int(rows.min()) / height,
                      (int(cols.max()) + 1) / width, (int(rows.max()) + 1) / height])
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def _rate(hits: torch.Tensor, dim: int) -> float:
    """Fraction of rows (dim=1: predictions) or columns (dim=0: targets) with a hit; 1 when there are none
    (no prediction said anything wrong, no target was missed)."""
    if hits.shape[1 - dim] == 0:
        return 1.0
    return float(hits.any(dim=dim).double().mean())


@EVALUATORS.register("detection")
class DetectionEvaluator:
    """3DB's detection evaluator: ground truth from the segmentation pass, predictions NMS'd at
    ``nms_threshold`` and capped at ``max_num_boxes`` (highest scores first), a prediction hits a target when
    their IoU exceeds ``iou_threshold`` (and, for ``precision``/``recall``, their labels match; the
    ``*_nolabel`` variants judge localisation only). ``is_correct`` = precision ≥ ``min_precision`` and recall
    ≥ ``min_recall``; ``is_valid`` = the object is in the frame. ``classmap_path`` (3DB's object → label
    file) is read by the config, which gives each object its label; the segmentation pass carries it."""

    output_type = "bboxes"
    needs = ("segmentation",)
    DEFAULT_MAX_NUM_BOXES = 100  # 3DB's output_shape [100, 6]

    def __init__(self, iou_threshold: float = 0.5, nms_threshold: float | None = None,
                 max_num_boxes: int | None = None, min_precision: float = 0.0, min_recall: float = 1.0,
                 classmap_path: str | None = None, **extra: Any):
        if extra:
            raise UsageError(f"evaluation detection: unknown argument(s) {', '.join(sorted(extra))}; valid: "
                             "iou_threshold, nms_threshold, max_num_boxes, min_precision, min_recall, classmap_path")
        for name, value in (("iou_threshold", iou_threshold), ("min_precision", min_precision),
                            ("min_recall", min_recall), ("nms_threshold", nms_threshold)):
            if value is None and name == "nms_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise UsageError(f"evaluation detection: {name} must be a number in [0, 1], got {value!r}")
        if nms_threshold is None:
            warnings.warn(f"evaluation detection: no nms_threshold; using iou_threshold {iou_threshold} "
                          "(3DB's NMS threshold)", stacklevel=2)
            nms_threshold = iou_threshold
        if max_num_boxes is None:
            warnings.warn(f"evaluation detection: no max_num_boxes; keeping at most {self.DEFAULT_MAX_NUM_BOXES} "
                          "boxes (3DB's output_shape [100, 6])", stacklevel=2)
            max_num_boxes = self.DEFAULT_MAX_NUM_BOXES
        if isinstance(max_num_boxes, bool) or not isinstance(max_num_boxes, int) or max_num_boxes < 1:
            raise UsageError(f"evaluation detection: max_num_boxes must be an integer >= 1, got {max_num_boxes!r}")
        self.iou_threshold, self.nms_threshold = float(iou_threshold), float(nms_threshold)
        self.max_num_boxes = max_num_boxes
        self.min_precision, self.min_recall = float(min_precision), float(min_recall)
        self.classmap_path = classmap_path

    def check(self, num_classes: int, labels: list[int]) -> None:
        bad = [label for label in labels if label >= num_classes]
        if bad:
            raise UsageError(f"object label(s) {bad} but the detector has {num_classes} classes (0..{num_classes - 1})")

    def evaluate_boxes(self, prediction: dict[str, torch.Tensor], segmentation: torch.Tensor,
                       input_hw: tuple[int, int]) -> dict[str, Any]:
        """Judge one image's detections (``boxes`` N×4 in the model input's pixels, ``scores``, ``labels``)
        against the objects in ``segmentation`` (any resolution: both sides are compared normalised)."""
        from torchvision.ops import box_iou, nms

        height, width = input_hw
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        boxes = prediction["boxes"].detach().double().reshape(-1, 4) / scale
        scores = prediction["scores"].detach().double().reshape(-1)
        labels = prediction["labels"].detach().long().reshape(-1)
        keep = nms(boxes, scores, self.nms_threshold)[:self.max_num_boxes]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        targets, target_labels = ground_truth_boxes(segmentation)
        iou_hits = box_iou(boxes, targets) > self.iou_threshold
        hits = iou_hits & labels[:, None].eq(target_labels[None, :])
        precision, recall = _rate(hits, 1), _rate(hits, 0)
        precision_nl, recall_nl = _rate(iou_hits, 1), _rate(iou_hits, 0)
        rows = torch.cat([boxes, scores[:, None], labels[:, None].double()], dim=1)
        return {"is_correct": precision >= self.min_precision and recall >= self.min_recall,
                "precision": precision, "recall": recall,
                "is_correct_nolabel": precision_nl >= self.min_precision and recall_nl >= self.min_recall,
                "precision_nolabel": precision_nl, "recall_nolabel": recall_nl,
                "is_valid": bool(len(target_labels)),
                "boxes": [[round(v, 6) for v in row[:5]] + [int(row[5])] for row in rows.tolist()],
                "output_type": self.output_type}


def make_evaluator(config: dict[str, Any]):
    module = str(config.get("module", "classification"))
    args = dict(config.get("args") or {})
    cls = EVALUATORS.resolve(module)
    try:
        return cls(**args)
    except TypeError as exc:
        raise UsageError(f"evaluation {module!r}: bad arguments ({exc})") from None
