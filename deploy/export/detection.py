"""Detector export: decoded boxes and scores, with or without NMS inside the ONNX graph.

Without NMS the graph ends in ``boxes`` (B, N, 4; x1, y1, x2, y2 in input pixels) and
``scores`` (B, C, N; objectness x class probability), the layout of ONNX's
NonMaxSuppression, so a runtime or TensorRT's NMS plug-in can take over. With NMS the graph
adds ONNX ``NonMaxSuppression`` (per class, centre_point_box = 0) and a third output
``selected`` (K, 3) of [batch, class, box] indices. In PyTorch the same step runs the
project's torch NMS, so the exported graph is checked against it like any other output.
"""

from __future__ import annotations

import torch
from torch import nn

from compressor.detection import decode, nms

OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = (*OUTPUTS, "selected")


class _NonMaxSuppression(torch.autograd.Function):
    """PyTorch: per image and class, greedy NMS of boxes scoring > ``score_threshold``, at most
    ``max_per_class`` kept, ordered by batch, class, descending score (as ONNX Runtime's).
    ONNX: the standard ``NonMaxSuppression`` operator."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):  # noqa: ARG004
        return select(boxes, scores, int(max_per_class), float(iou_threshold), float(score_threshold))

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold, center_point_box_i=0)


def select(boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou_threshold: float, score_threshold: float) -> torch.Tensor:
    """The NonMaxSuppression operator's result computed with the project's torch NMS."""
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            candidates = (scores[b, c] > score_threshold).nonzero().flatten()
            keep = candidates[nms(boxes[b, candidates], scores[b, c, candidates], iou_threshold)][:max_per_class]
            rows += [[b, c, int(i)] for i in keep]
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)


class DetectorExport(nn.Module):
    """A YOLOv3 zoo model -> (boxes, scores[, selected]) for export."""

    def __init__(self, model: nn.Module, with_nms: bool, iou_threshold: float = 0.45, score_threshold: float = 0.25,
                 max_per_class: int = 100):  # fmt: skip
        super().__init__()
        self.model = model
        self.with_nms = with_nms
        self.register_buffer("max_per_class", torch.tensor([max_per_class], dtype=torch.int64))
        self.register_buffer("iou_threshold", torch.tensor([iou_threshold], dtype=torch.float32))
        self.register_buffer("score_threshold", torch.tensor([score_threshold], dtype=torch.float32))

    @property
    def output_names(self) -> tuple[str, ...]:
        return NMS_OUTPUTS if self.with_nms else OUTPUTS

    def reference_indices(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """What ``selected`` must be for the given boxes and scores (the parity check feeds ONNX
        Runtime's own, so that near-ties of a random model cannot flip the comparison)."""
        return select(boxes, scores, int(self.max_per_class), float(self.iou_threshold), float(self.score_threshold))

    def forward(self, x: torch.Tensor):
        pred = decode(self.model(x), self.model.anchors, self.model.strides)
        boxes = pred[..., :4]
        scores = (pred[..., 4:5] * pred[..., 5:]).transpose(1, 2)
        if not self.with_nms:
            return boxes, scores
        selected = _NonMaxSuppression.apply(boxes, scores, self.max_per_class, self.iou_threshold, self.score_threshold)
        return boxes, scores, selected
