"""Detection average precision: AP50 and COCO's mAP@[.5:.95].

Per class, detections of all images are sorted by score; each is a true positive when it
overlaps an unmatched ground truth of its class by IoU >= t (the highest-IoU one is taken),
else a false positive. AP is the area under the precision envelope over recall ("all-point"
interpolation, VOC 2010+; COCO samples the same envelope at 101 recall points, which differs
by well under a point). The mean runs over classes that have ground truth; mAP@[.5:.95]
averages ten thresholds 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .boxes import box_iou

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP from per-detection true-positive flags and scores."""
    if num_gt == 0:
        raise ValueError("AP is undefined without ground truth")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / num_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match(det: torch.Tensor, gt: torch.Tensor, threshold: float) -> np.ndarray:
    """One image, one class: det (n, 5) xyxy + score, gt (m, 4) -> (n,) true-positive flags."""
    tp = np.zeros(len(det), dtype=bool)
    if len(det) == 0 or len(gt) == 0:
        return tp
    iou = box_iou(det[:, :4], gt).numpy()
    taken = np.zeros(len(gt), dtype=bool)
    for i in np.argsort(-det[:, 4].numpy(), kind="stable"):
        candidates = np.where(~taken & (iou[i] >= threshold), iou[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= 0:
            taken[j] = tp[i] = True
    return tp


@dataclass(frozen=True)
class DetectionScores:
    ap50: float
    map50_95: float
    per_class_ap50: dict[int, float]

    def as_dict(self) -> dict:
        return {"AP50": self.ap50, "mAP50-95": self.map50_95, "per_class_AP50": {str(k): v for k, v in self.per_class_ap50.items()}}


def evaluate_detections(detections: list[torch.Tensor], ground_truth: list[torch.Tensor],
                        thresholds: tuple[float, ...] = COCO_THRESHOLDS) -> DetectionScores:  # fmt: skip
    """``detections``: per image (n, 6) x1, y1, x2, y2, score, class; ``ground_truth``: per image
    (m, 5) class, x1, y1, x2, y2 in the same coordinates."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truth)} of ground truth")
    classes = sorted({int(c) for g in ground_truth for c in g[:, 0].tolist()})
    if not classes:
        raise ValueError("the evaluation set has no ground-truth boxes")
    ap = np.zeros((len(thresholds), len(classes)))
    for k, c in enumerate(classes):
        num_gt = sum(int((g[:, 0] == c).sum()) for g in ground_truth)
        for ti, t in enumerate(thresholds):
            flags, scores = [], []
            for det, gt in zip(detections, ground_truth, strict=True):
                d = det[det[:, 5] == c][:, :5].float().cpu()
                flags.append(match(d, gt[gt[:, 0] == c][:, 1:5].float().cpu(), t))
                scores.append(d[:, 4].numpy())
            ap[ti, k] = average_precision(np.concatenate(flags), np.concatenate(scores), num_gt)
    i50 = thresholds.index(0.5) if 0.5 in thresholds else 0
    return DetectionScores(float(ap[i50].mean()), float(ap.mean()), {c: float(ap[i50, k]) for k, c in enumerate(classes)})
