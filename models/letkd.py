"""letKD's knowledge-distillation layer (Gorgun et al., seed 003 §4.1), part of the student.

x^ = x + alpha * g(x), g = 1x1 conv (matching kernels omega_k) - BN - ReLU - 1x1 conv (semantic
vectors nu_k), applied to the output of chosen sub-blocks of the student (its hint points).
The first conv's responses a_k = omega_k^T x_i are the matching scores the teacher supervises
during training (kept in ``scores``); BN-ReLU stands for the thresholded soft-max of eq. 4.3,
the paper's "practical simplification". The layers stay in the model for inference and
export; ``attach_kd_layers`` is how ``create_model(..., letkd=spec)`` rebuilds a saved student.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .features import hint_points


class KDLayer(nn.Module):
    def __init__(self, channels: int, templates: int, alpha: float = 1.0):
        super().__init__()
        self.match = nn.Conv2d(channels, templates, 1, bias=False)
        self.bn = nn.BatchNorm2d(templates)
        self.relu = nn.ReLU()
        self.embed = nn.Conv2d(templates, channels, 1, bias=False)
        self.alpha = alpha
        self.scores: torch.Tensor | None = None  # the latest matching scores (B, K, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scores = self.match(x)
        return x + self.alpha * self.embed(self.relu(self.bn(self.scores)))


def attach_kd_layers(model: nn.Module, points: Sequence[int], channels: Sequence[int], templates: Sequence[int],
                     alpha: float = 1.0) -> nn.Module:  # fmt: skip
    """Insert a KD layer after each of the model's hint ``points`` (1-based, the sub-block's
    output) and record the spec in ``model.model_options`` so that a saved student reloads."""
    names = {p.index: p.name for p in hint_points(model)}
    bad = [p for p in points if p not in names]
    if bad or not points:
        raise ValueError(f"letKD points {list(points)} must be hint points 1..{len(names)} of the student")
    if not (len(points) == len(channels) == len(templates)):
        raise ValueError("letKD needs one channel count and one template count per point")
    model.kd_layers = nn.ModuleList(KDLayer(c, k, alpha) for c, k in zip(channels, templates, strict=True))
    for layer, p in zip(model.kd_layers, points, strict=True):
        model.get_submodule(names[p]).register_forward_hook(_apply(layer))
    model.model_options = {"letkd": {"points": list(points), "channels": list(channels), "templates": list(templates), "alpha": alpha}}
    return model


def _apply(layer: KDLayer):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return layer(output)

    return hook
