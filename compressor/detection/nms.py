"""Non-maximum suppression in plain torch (no torchvision), and YOLO post-processing."""

from __future__ import annotations

import torch

from .boxes import box_iou


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, highest score first. A box is dropped when its IoU with
    an already kept box exceeds ``iou_threshold`` (the same rule as torchvision.ops.nms)."""
    order = scores.argsort(descending=True)
    if order.numel() == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(order.numel()):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class: boxes of different classes never suppress each other (offset trick)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() + 1)
    return nms(boxes + offset, scores, iou_threshold)


def postprocess(decoded: torch.Tensor, conf_threshold: float = 0.001, iou_threshold: float = 0.5,
                max_det: int = 100, pre_nms: int = 3000) -> list[torch.Tensor]:  # fmt: skip
    """(B, N, 5 + C) decoded predictions -> per image (n, 6): x1, y1, x2, y2, score, class.

    Score = objectness x class probability; every (box, class) pair above ``conf_threshold``
    is a candidate (multi-label, as in YOLOv3's independent logistic classifiers)."""
    return [select_detections(pred[:, :4], pred[:, 4:5] * pred[:, 5:], conf_threshold, iou_threshold, max_det, pre_nms)
            for pred in decoded]  # fmt: skip


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, conf_threshold: float = 0.001, iou_threshold: float = 0.5,
                      max_det: int = 100, pre_nms: int = 3000) -> torch.Tensor:  # fmt: skip
    """One image: boxes (N, 4) x1, y1, x2, y2 and scores (N, C) -> (n, 6) detections after
    per-class NMS (what an exported detector's ``boxes`` and ``scores`` outputs become)."""
    box_idx, cls = (scores > conf_threshold).nonzero(as_tuple=True)
    s = scores[box_idx, cls]
    if s.numel() > pre_nms:
        top = s.topk(pre_nms).indices
        box_idx, cls, s = box_idx[top], cls[top], s[top]
    boxes = boxes[box_idx]
    keep = batched_nms(boxes, s, cls, iou_threshold)[:max_det]
    return torch.cat([boxes[keep], s[keep, None], cls[keep, None].to(boxes.dtype)], 1)
