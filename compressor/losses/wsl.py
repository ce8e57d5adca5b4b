import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs


class WSL(DistillLoss):
    """Weighted soft labels, Zhou et al. 2021 (ICLR): soft cross-entropy per sample, weighted by
    w = 1 - exp(-CE_s / CE_t) with CE_s, CE_t the student's and teacher's (untempered, detached)
    cross-entropy on the true label, so samples the teacher gets wrong count less. x T^2."""

    kind = "logit"
    default_weight = 2.5

    def __init__(self, T: float = 2.0):
        super().__init__()
        if T <= 0:
            raise ValueError(f"WSL temperature T must be > 0, got {T}")
        self.T = T

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        zt = t.logits.detach()
        soft_ce = -(F.softmax(zt / self.T, dim=1) * F.log_softmax(s.logits / self.T, dim=1)).sum(1)
        ce_s = F.cross_entropy(s.logits.detach(), s.labels, reduction="none")
        ce_t = F.cross_entropy(zt, s.labels, reduction="none")
        weight = 1 - torch.exp(-(ce_s / (ce_t + 1e-7)).clamp_min(0))
        return self.T**2 * (weight * soft_ce).mean()
