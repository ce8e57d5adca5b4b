import torch
import torch.nn.functional as F
from torch import nn

from .adapters import ConvRegressor
from .base import DistillLoss, LossContext, Outputs


class FitNet(DistillLoss):
    """FitNets, Romero et al. 2015: MSE between a learned regressor of the student's hint
    features and the teacher's. The original trains in two stages (stage 1: the student up to
    its hint layers + regressors on the hint loss alone; stage 2: KD on the whole student, no hint
    term); ``two_stage=True`` runs stage 1 as the engine's initialisation stage (``init_epochs``)
    and drops the hint term after it (``fitnet+kd``: stage 2 is KD). ``two_stage=False`` (default)
    keeps the hint term throughout, as RepDistiller's ``hint`` runs it."""

    default_weight = 100.0

    def __init__(self, regressors: nn.ModuleList, two_stage: bool = False):
        super().__init__()
        self.regressors = regressors
        self.two_stage = two_stage
        self.needs_init = two_stage
        self.in_distillation = not two_stage

    @classmethod
    def build(cls, ctx: LossContext, two_stage: bool = False) -> "FitNet":
        regs = [ConvRegressor(s, t, relu=not ctx.preact) for s, t in zip(ctx.student_feats, ctx.teacher_feats, strict=True)]
        return cls(nn.ModuleList(regs), two_stage)

    def hint_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return sum(F.mse_loss(reg(fs), ft.detach()) for reg, fs, ft in zip(self.regressors, s.feats, t.feats, strict=True))

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return self.hint_loss(s, t)

    @property
    def has_init_stage(self) -> bool:
        return self.two_stage

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor | None:
        return self.hint_loss(s, t) if self.two_stage else None
