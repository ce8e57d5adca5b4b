import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs, match_spatial


class VIDPair(nn.Module):
    """Gaussian q(t | s): mean from a 3-layer 1x1-conv regressor, per-channel variance softplus(v) + eps."""

    def __init__(self, s_channels: int, t_channels: int, init_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, 1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, 1, bias=False),
        )  # fmt: skip
        self.log_scale = nn.Parameter(torch.full((t_channels,), math.log(math.exp(init_var - eps) - 1.0)))
        self.eps = eps

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        fs, ft = match_spatial(fs, ft)
        mean = self.regressor(fs)
        var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - ft) ** 2 / var + torch.log(var))).mean()


class VID(DistillLoss):
    """Variational information distillation, Ahn et al. 2019: maximise a variational lower bound
    of I(t; s) by minimising the Gaussian negative log-likelihood of the teacher's hint features
    given the student's (constant terms dropped)."""

    default_weight = 1.0

    def __init__(self, pairs: nn.ModuleList):
        super().__init__()
        self.pairs = pairs

    @classmethod
    def build(cls, ctx: LossContext, init_var: float = 5.0) -> "VID":
        return cls(nn.ModuleList(VIDPair(s[0], t[0], init_var) for s, t in zip(ctx.student_feats, ctx.teacher_feats, strict=True)))

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return sum(pair(fs, ft.detach()) for pair, fs, ft in zip(self.pairs, s.feats, t.feats, strict=True))
