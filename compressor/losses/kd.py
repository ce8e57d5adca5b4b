import torch

from .base import DistillLoss, Outputs, kl_soft


class KD(DistillLoss):
    """Knowledge distillation, Hinton et al. 2015: KL between temperature-softened softmaxes, x T^2."""

    kind = "logit"
    default_weight = 1.0

    def __init__(self, T: float = 4.0):
        super().__init__()
        if T <= 0:
            raise ValueError(f"KD temperature T must be > 0, got {T}")
        self.T = T

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return kl_soft(s.logits, t.logits.detach(), self.T)
