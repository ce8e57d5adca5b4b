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
