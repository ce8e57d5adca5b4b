import torch
import torch.nn.functional as F

from .base import DistillLoss, LossContext, Outputs


def fsp_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure between two maps: (B, C1, H, W), (B, C2, H', W') -> (B, C1, C2),
    G = a b^T / (H W), the larger map average-pooled to the smaller's size first."""
    if a.shape[2] > b.shape[2]:
        a = F.adaptive_avg_pool2d(a, b.shape[2:])
    elif b.shape[2] > a.shape[2]:
        b = F.adaptive_avg_pool2d(b, a.shape[2:])
    return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)) / (a.shape[2] * a.shape[3])


class FSP(DistillLoss):
    """FSP matrices, Yim et al. 2017: mean squared difference between student and teacher flow
    matrices of consecutive hint pairs. Comparable only when the channel counts agree at every
    hint (same-architecture families), which ``build`` checks. As in the paper (stage 1: the FSP
    loss; stage 2: the task) and RepDistiller (its ``init`` trains the student's feature modules on
    this term, then the main loop sets it to 0), the term trains in the initialisation stage
    (``init_epochs``) only; ``keep: true`` keeps it in distillation too."""

    default_weight = 50.0
    needs_init = True

    def __init__(self, keep: bool = False):
        super().__init__()
        self.in_distillation = keep

    @classmethod
    def build(cls, ctx: LossContext, keep: bool = False) -> "FSP":
        if len(ctx.student_feats) < 2:
            raise ValueError("FSP needs at least 2 hints (it compares the flow between consecutive hints)")
        s_c = [s[0] for s in ctx.student_feats]
        t_c = [t[0] for t in ctx.teacher_feats]
        if s_c != t_c:
            raise ValueError(f"FSP needs equal channel counts at every hint; student {s_c}, teacher {t_c} (same-architecture pairs only)")
        return cls(keep)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for i in range(len(s.feats) - 1):
            g_s = fsp_matrix(s.feats[i], s.feats[i + 1])
            g_t = fsp_matrix(t.feats[i].detach(), t.feats[i + 1].detach())
            total = total + (g_s - g_t).pow(2).mean()
        return total

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return self.forward(s, t)
