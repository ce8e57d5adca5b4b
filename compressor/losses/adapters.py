"""Trainable adapters between student and teacher features (they live in the loss, not the student)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvRegressor(nn.Module):
    """Student feature map (C_s, H_s, W_s) -> teacher shape (C_t, H_t, W_t), as RepDistiller's ConvReg:
    a stride-2 3x3 conv when the student map is twice as large, a 4x4 transposed conv when it is
    half as large, a (1 + H_s - H_t) conv when larger by other amounts, then BN (+ ReLU when the
    teacher features are post-activation). Other size ratios are resized bilinearly first."""

    def __init__(self, s_shape: tuple[int, int, int], t_shape: tuple[int, int, int], relu: bool = True):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape, t_shape
        self.resize = None
        if s_h == 2 * t_h and s_w == 2 * t_w:
            self.conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h and 2 * s_w == t_w:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.resize = (t_h, t_w)
            self.conv = nn.Conv2d(s_c, t_c, 1)
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


def conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class Embed(nn.Module):
    """Linear projection + L2 normalisation (CRD's embedding head)."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)
