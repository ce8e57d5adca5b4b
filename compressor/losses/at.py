import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs, match_spatial


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """Activation-based spatial attention: (B, C, H, W) -> L2-normalised mean_c |f|^p, (B, H*W)."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


class AT(DistillLoss):
    """Attention transfer, Zagoruyko & Komodakis 2017: mean squared difference of L2-normalised
    attention maps mean_c |A_c|^p at every hint pair (p = 2; 001 uses p = 1 on ImageNet)."""

    default_weight = 1000.0

    def __init__(self, p: float = 2.0):
        super().__init__()
        if p <= 0:
            raise ValueError(f"AT exponent p must be > 0, got {p}")
        self.p = p

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for fs, ft in zip(s.feats, t.feats, strict=True):
            fs, ft = match_spatial(fs, ft.detach())
            total = total + (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()
        return total
