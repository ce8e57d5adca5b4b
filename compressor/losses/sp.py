import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs


class SP(DistillLoss):
    """Similarity-preserving KD, Tung & Mori 2019: the row-normalised B x B similarity matrix of
    the batch's flattened hint features should match the teacher's; ||G_s - G_t||_F^2 / B^2."""

    default_weight = 3000.0

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        b = s.logits.shape[0]
        for fs, ft in zip(s.feats, t.feats, strict=True):
            fs, ft = fs.flatten(1), ft.detach().flatten(1)
            g_s = F.normalize(fs @ fs.t(), dim=1)
            g_t = F.normalize(ft @ ft.t(), dim=1)
            total = total + (g_s - g_t).pow(2).sum() / (b * b)
        return total
