import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs


class DKD(DistillLoss):
    """Decoupled KD, Zhao et al. 2022 (CVPR): KD split into target-class KD (binary: true class
    vs the rest) and non-target-class KD (distribution over the other classes),
    L = alpha * TCKD + beta * NCKD, both x T^2, ramped in linearly over ``warmup`` epochs."""

    kind = "logit"
    default_weight = 1.0

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, warmup: int = 20):
        super().__init__()
        if T <= 0 or warmup < 0:
            raise ValueError(f"DKD needs T > 0 and warmup >= 0, got T={T}, warmup={warmup}")
        self.alpha, self.beta, self.T, self.warmup = alpha, beta, T, warmup
        self.ramp = 1.0 if warmup == 0 else 0.0

    def set_epoch(self, epoch: int) -> None:
        self.ramp = 1.0 if self.warmup == 0 else min((epoch + 1) / self.warmup, 1.0)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        T = self.T
        gt = F.one_hot(s.labels, s.logits.shape[1]).bool()
        p_s = F.softmax(s.logits / T, dim=1)
        p_t = F.softmax(t.logits.detach() / T, dim=1)
        # binary distributions [p(true class), p(rest)]
        b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
        b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
        tckd = F.kl_div(torch.log(b_s.clamp_min(1e-12)), b_t, reduction="batchmean") * T**2
        # distributions over the non-target classes: mask the true class out of the softmax
        masked = 1000.0 * gt
        nckd = (
            F.kl_div(F.log_softmax(s.logits / T - masked, dim=1), F.softmax(t.logits.detach() / T - masked, dim=1), reduction="batchmean")
            * T**2
        )
        return self.ramp * (self.alpha * tckd + self.beta * nckd)
