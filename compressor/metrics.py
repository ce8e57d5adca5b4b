"""Classification scores, computed once for every part of the toolchain (training, the averager's
and EKD's reports, cross distillation, profiling)."""

from __future__ import annotations

import torch


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[int, int]:
    """(top-1 hits, top-k hits) of a batch; ``k`` is capped at the number of classes (with fewer
    than ``k`` classes, top-k counts every sample). Top-1 is argmax's: a tie goes to the lower class."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return top1_hits(logits, labels), int((top == labels[:, None]).any(1).sum())


def top1_hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(1) == labels).sum())
