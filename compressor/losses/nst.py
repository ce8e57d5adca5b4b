import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs, match_spatial


def _poly(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Polynomial kernel (a . b)^2 between every channel pair: (B, Ca, HW), (B, Cb, HW) -> (B, Ca, Cb)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2)


class NST(DistillLoss):
    """Neuron selectivity transfer, Huang & Wang 2017: squared MMD with a degree-2 polynomial
    kernel between the distributions of L2-normalised channel activation patterns."""

    default_weight = 50.0

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for fs, ft in zip(s.feats, t.feats, strict=True):
            fs, ft = match_spatial(fs, ft.detach())
            fs = F.normalize(fs.flatten(2), dim=2)
            ft = F.normalize(ft.flatten(2), dim=2)
            total = total + _poly(ft, ft).mean() - 2 * _poly(fs, ft).mean() + _poly(fs, fs).mean()
        return total
