"""Accuracy of any runtime on an evaluation set, and agreement between two runtimes."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from compressor.data import ImageDataset
from compressor.metrics import topk_hits

from ..runtime.base import Runtime


def predict(runtime: Runtime, data: ImageDataset, batch_size: int = 64, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K), labels (N,)) over the first ``limit`` items of ``data``."""
    logits, labels = [], []
    seen = 0
    for images, y, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
        if limit is not None and seen >= limit:
            break
        logits.append(runtime(images.numpy()))
        labels.append(y.numpy())
        seen += len(y)
    out, lab = np.concatenate(logits), np.concatenate(labels)
    return (out[:limit], lab[:limit]) if limit is not None else (out, lab)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 (top-K when K < 5) accuracy in %."""
    top1, top5 = topk_hits(torch.from_numpy(np.asarray(logits, dtype=np.float32)), torch.from_numpy(np.asarray(labels)), 5)
    n = max(len(labels), 1)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "samples": int(len(labels))}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """% of samples whose top-1 class is the same under two sets of logits."""
    return float(100 * (a.argmax(1) == b.argmax(1)).mean())


def detections(boxes: np.ndarray, scores: np.ndarray) -> list[torch.Tensor]:
    """An exported detector's outputs, boxes (B, N, 4) and scores (B, C, N), -> per image (n, 6)
    x1, y1, x2, y2, score, class after per-class NMS, as the training-time evaluation selects them."""
    from compressor.detection import select_detections

    return [
        select_detections(torch.from_numpy(b), torch.from_numpy(s.T.copy()), conf_threshold=EVAL_SCORE)
        for b, s in zip(boxes, scores, strict=True)
    ]


EVAL_SCORE = 0.005  # the lowest score kept for AP (compressor's detection evaluation uses the same)


def ap50(found: list[torch.Tensor], truth: list[torch.Tensor]) -> float:
    """All-point AP at IoU 0.5 in %, of detections (n, 6) against ground truth (m, 5) class, x1, y1, x2, y2."""
    from compressor.detection import evaluate_detections

    return 100 * evaluate_detections(found, truth, thresholds=(0.5,)).ap50


CONFIDENT = 0.25  # reference detections scoring at least this (the default --nms-score) are what agreement matches


def detection_agreement(reference: list[torch.Tensor], found: list[torch.Tensor]) -> float | None:
    """AP50 (%) of ``found`` against the reference model's confident detections: how much of what the
    reference finds is found in the same place (None when the reference finds nothing)."""
    confident = [d[d[:, 4] >= CONFIDENT][:, [5, 0, 1, 2, 3]] for d in reference]
    return ap50(found, confident) if any(len(c) for c in confident) else None
