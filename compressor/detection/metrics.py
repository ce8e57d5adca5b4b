"""Detection average precision: AP50 and COCO's mAP@[.5:.95].

Per class, detections of all images are sorted by score; each is a true positive when it
overlaps an unmatched ground truth of its class by IoU >= t (the highest-IoU one is taken; on a
tie the last one, as pycocotools' ``evaluateImg`` does), else a false positive. Each image keeps
its ``max_det`` best-scoring detections per class (COCO: 100); IoU and scores are float64. AP is
the area under the precision envelope over recall, reported two ways: "all-point"
interpolation (VOC 2010+) and COCO's, which samples the envelope at 101 recall points 0, 0.01,
..., 1 (``pycocotools.cocoeval.COCOeval.accumulate``): compare published COCO numbers with the
latter. The mean runs over classes that have ground truth; mAP@[.5:.95] averages ten thresholds
0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .boxes import box_iou

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


COCO_RECALLS = np.linspace(0.0, 1.0, 101)


def _any_detection(tp: np.ndarray, num_gt: int) -> bool:
    if num_gt == 0:
        raise ValueError("AP is undefined without ground truth")
    return len(tp) > 0


def _curve(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each detection, in descending score order (ties keep their order)."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    return ctp / num_gt, ctp / np.maximum(ctp + cfp, np.spacing(1))


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP from per-detection true-positive flags and scores."""
    if not _any_detection(tp, num_gt):
        return 0.0
    recall, precision = _curve(tp, scores, num_gt)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def average_precision_101(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """COCO's AP: the precision envelope read at 101 recall points (0 where recall never gets there)."""
    if not _any_detection(tp, num_gt):
        return 0.0
    recall, precision = _curve(tp, scores, num_gt)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, COCO_RECALLS, side="left")
    sampled = np.where(at < len(envelope), envelope[np.minimum(at, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def match(det: torch.Tensor, gt: torch.Tensor, threshold: float) -> np.ndarray:
    """One image, one class: det (n, 5) xyxy + score, gt (m, 4) -> (n,) true-positive flags."""
    tp = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return tp
    iou = box_iou(det[:, :4].double(), gt.double()).numpy()
    taken = np.zeros(len(gt), dtype=bool)
    for i in np.argsort(-det[:, 4].double().numpy(), kind="mergesort"):
        candidates = np.where(~taken & (iou[i] >= threshold), iou[i], -1.0)
        j = len(candidates) - 1 - int(candidates[::-1].argmax())  # the last of equal IoUs, as pycocotools
        if candidates[j] >= 0:
            taken[j] = tp[i] = True
    return tp


@dataclass(frozen=True)
class DetectionScores:
    """All-point AP50 and mAP@[.5:.95], with COCO's 101-point values beside them."""

    ap50: float
    map50_95: float
    per_class_ap50: dict[int, float]
    ap50_coco: float = 0.0
    map50_95_coco: float = 0.0

    def as_dict(self) -> dict:
        return {"AP50": self.ap50, "mAP50-95": self.map50_95, "AP50 (COCO 101-pt)": self.ap50_coco,
                "mAP50-95 (COCO 101-pt)": self.map50_95_coco,
                "per_class_AP50": {str(k): v for k, v in self.per_class_ap50.items()}}  # fmt: skip


def evaluate_detections(detections: list[torch.Tensor], ground_truth: list[torch.Tensor],
                        thresholds: tuple[float, ...] = COCO_THRESHOLDS, max_det: int = 100) -> DetectionScores:  # fmt: skip
    """``detections``: per image (n, 6) x1, y1, x2, y2, score, class; ``ground_truth``: per image
    (m, 5) class, x1, y1, x2, y2 in the same coordinates; ``max_det``: detections kept per image
    and class, best scores first (COCO's maxDets)."""
    if max_det < 1:
        raise ValueError(f"max_det must be >= 1, got {max_det}")
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")
    classes = sorted({int(c) for g in ground_truth for c in g[:, 0].tolist()})
    if not classes:
        raise ValueError("the evaluation set has no ground-truth boxes")
    ap, ap101 = np.zeros((len(thresholds), len(classes))), np.zeros((len(thresholds), len(classes)))
    for k, c in enumerate(classes):
        num_gt = sum(int((g[:, 0] == c).sum()) for g in ground_truth)
        per_image = [(_best(det[det[:, 5] == c][:, :5].double().cpu(), max_det), gt[gt[:, 0] == c][:, 1:5].double().cpu())
                     for det, gt in zip(detections, ground_truth, strict=True)]  # fmt: skip
        scores = np.concatenate([d[:, 4].numpy() for d, _ in per_image])
        for ti, t in enumerate(thresholds):
            flags = np.concatenate([match(d, g, t) for d, g in per_image])
            ap[ti, k] = average_precision(flags, scores, num_gt)
            ap101[ti, k] = average_precision_101(flags, scores, num_gt)
    i50 = thresholds.index(0.5) if 0.5 in thresholds else 0
    return DetectionScores(float(ap[i50].mean()), float(ap.mean()), {c: float(ap[i50, k]) for k, c in enumerate(classes)},
                           float(ap101[i50].mean()), float(ap101.mean()))  # fmt: skip


def _best(det: torch.Tensor, max_det: int) -> torch.Tensor:
    """The ``max_det`` highest-scoring rows, in descending score order (stable)."""
    order = np.argsort(-det[:, 4].numpy(), kind="mergesort")[:max_det]
    return det[torch.as_tensor(order, dtype=torch.long)]
