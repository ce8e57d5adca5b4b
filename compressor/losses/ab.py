import torch
from torch import nn

from .adapters import conv1x1_bn
from .base import DistillLoss, LossContext, Outputs, match_spatial


class AB(DistillLoss):
    """Activation boundaries, Heo et al. 2019 (AAAI): a 1x1-conv connector maps the student's
    pre-activation features to the teacher's, and an alternative (hinge-like) L2 loss with
    margin m pushes each connector response to the teacher neuron's side of the boundary:
    (s + m)^2 [s > -m, t <= 0] + (s - m)^2 [s <= m, t > 0]. Hints should be pre-activation
    (``preact: true``). Deeper hints weigh more (2^(i - n + 1)), scaled by 3 / (1000 B) as in
    RepDistiller. Like the paper and RepDistiller (whose main loop sets AB's term to 0 after its
    ``init``), it trains in the initialisation stage (``init_epochs``) only; the distillation that
    follows is the other terms (``ab+kd``: KD, as the paper's Table 2) or CE alone. ``keep: true``
    keeps the term in distillation too (RepDistiller's comment "can also add loss to this stage")."""

    default_weight = 1.0

    needs_init = True

    def __init__(self, connectors: nn.ModuleList, margin: float = 1.0, keep: bool = False):
        super().__init__()
        self.in_distillation = keep
        self.connectors = connectors
        self.margin = margin
        n = len(connectors)
        self.weights = [2.0 ** (i - n + 1) for i in range(n)]

    @classmethod
    def build(cls, ctx: LossContext, margin: float = 1.0, keep: bool = False) -> "AB":
        connectors = nn.ModuleList(conv1x1_bn(s[0], t[0]) for s, t in zip(ctx.student_feats, ctx.teacher_feats, strict=True))
        return cls(connectors, margin, keep)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        m, batch = self.margin, s.logits.shape[0]
        total = s.logits.new_zeros(())
        for w, conn, fs, ft in zip(self.weights, self.connectors, s.feats, t.feats, strict=True):
            src, tgt = match_spatial(conn(fs), ft.detach())
            loss = (src + m) ** 2 * ((src > -m) & (tgt <= 0)) + (src - m) ** 2 * ((src <= m) & (tgt > 0))
            total = total + w * loss.sum() / batch / 1000 * 3
        return total

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return self.forward(s, t)
