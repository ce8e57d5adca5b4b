import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs


def gaussian_correlation(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, D) L2-normalised -> (B, B) instance correlation exp(-gamma ||x_i - x_j||^2)."""
    d2 = (2 - 2 * x @ x.t()).clamp_min(0)
    return torch.exp(-gamma * d2)


class CC(DistillLoss):
    """Correlation congruence, Peng et al. 2019 (ICCV): the B x B correlation between instances,
    a Gaussian RBF kernel on L2-normalised features, should match the teacher's; mean squared
    difference. The paper approximates the kernel by a P-order Taylor series; the exact kernel
    is used here (the series is only a cost-saving approximation of it). Applied per hint to the
    spatially pooled features, so it also serves as a hint type (000 ch. 5)."""

    default_weight = 0.02

    def __init__(self, gamma: float = 0.4):
        super().__init__()
        self.gamma = gamma

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for fs, ft in zip(s.feats, t.feats, strict=True):
            c_s = gaussian_correlation(F.normalize(fs.mean((2, 3)), dim=1), self.gamma)
            c_t = gaussian_correlation(F.normalize(ft.detach().mean((2, 3)), dim=1), self.gamma)
            total = total + (c_s - c_t).pow(2).mean()
        return total
