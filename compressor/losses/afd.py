import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs


def _linear_bn(nin: int, nout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(nin, nout), nn.BatchNorm1d(nout))


class AFD(DistillLoss):
    """Attention-based feature distillation, Ji et al. 2021 (AAAI): every teacher hint attends
    over all student hints; the attention (query from the teacher's channel means, bilinear key
    from the student's, plus learned positional terms) weighs the distances between L2-normalised
    spatial attention maps (the student's resized to each teacher size). 001 restricts the
    teacher candidates to the selected hints, which is what the hint pairs here are."""

    default_weight = 200.0

    def __init__(self, ctx: LossContext, qk_dim: int = 128):
        super().__init__()
        n_t, n_s = len(ctx.teacher_feats), len(ctx.student_feats)
        self.qk_dim = qk_dim
        self.t_sizes = [tuple(t[1:]) for t in ctx.teacher_feats]
        self.query = nn.ModuleList(_linear_bn(t[0], qk_dim) for t in ctx.teacher_feats)
        self.key = nn.ModuleList(nn.Sequential(_linear_bn(s[0], qk_dim), nn.ReLU()) for s in ctx.student_feats)
        self.bilinear = _linear_bn(qk_dim, qk_dim * n_t)
        self.p_t = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_t, qk_dim)))
        self.p_s = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_s, qk_dim)))

    @classmethod
    def build(cls, ctx: LossContext, qk_dim: int = 128) -> "AFD":
        return cls(ctx, qk_dim)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        b, n_s, n_t = s.logits.shape[0], len(s.feats), len(t.feats)
        t_feats = [f.detach() for f in t.feats]
        query = torch.stack([q(f.mean((2, 3))) for q, f in zip(self.query, t_feats, strict=True)], dim=1)  # (B, T, q)
        key = torch.stack([k(f.mean((2, 3))) for k, f in zip(self.key, s.feats, strict=True)], dim=1)  # (B, S, q)
        bilinear_key = self.bilinear(key.reshape(b * n_s, -1)).view(b, n_s, n_t, self.qk_dim)
        logit = (torch.einsum("bstq,btq->bts", bilinear_key, query) + self.p_t @ self.p_s.t()) / math.sqrt(self.qk_dim)
        att = F.softmax(logit, dim=2)  # (B, T, S): for each teacher hint, a distribution over student hints
        total = s.logits.new_zeros(())
        for i, (ft, size) in enumerate(zip(t_feats, self.t_sizes, strict=True)):
            v_t = F.normalize(ft.pow(2).mean(1).flatten(1), dim=1)  # (B, HW_t)
            v_s = torch.stack([F.adaptive_avg_pool2d(fs.pow(2).mean(1, keepdim=True), size).flatten(1) for fs in s.feats], dim=1)
            v_s = F.normalize(v_s, dim=2)  # (B, S, HW_t)
            diff = (v_s - v_t[:, None]).pow(2).mean(2)  # (B, S)
            total = total + (diff * att[:, i]).sum(1).mean()
        return total
