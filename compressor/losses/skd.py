import torch

from .base import DistillLoss, Outputs, kl_soft


class SKD(DistillLoss):
    """Spherical KD, Guo et al. 2020 (001 §2): both logit vectors are scaled to unit L2 norm and
    multiplied by the batch's mean teacher logit norm, then distilled as in KD. This removes the
    logit-magnitude gap between a large teacher and a small student."""

    kind = "logit"
    default_weight = 1.0

    def __init__(self, T: float = 4.0, eps: float = 1e-8):
        super().__init__()
        if T <= 0:
            raise ValueError(f"SKD temperature T must be > 0, got {T}")
        self.T, self.eps = T, eps

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        zt = t.logits.detach()
        t_norm = zt.norm(dim=1, keepdim=True)
        radius = t_norm.mean()
        zs = s.logits / (s.logits.norm(dim=1, keepdim=True) + self.eps) * radius
        zt = zt / (t_norm + self.eps) * radius
        return kl_soft(zs, zt, self.T)
