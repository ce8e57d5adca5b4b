import torch
import torch.nn.functional as F

from .base import DistillLoss, Outputs


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances with a zero diagonal."""
    sq = e.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at every anchor j between every pair (i, k): (B*B*B,)."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RKD(DistillLoss):
    """Relational KD, Park et al. 2019: Huber loss between the student's and teacher's
    mean-normalised pairwise distances (weight 25) and triplet angles (weight 50), on the
    penultimate embeddings."""

    kind = "embedding"
    default_weight = 1.0

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.wd, self.wa = distance_weight, angle_weight

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        es, et = s.embedding.flatten(1), t.embedding.detach().flatten(1)
        loss_d = F.smooth_l1_loss(_normalised_distances(es), _normalised_distances(et))
        loss_a = F.smooth_l1_loss(_angles(es), _angles(et))
        return self.wd * loss_d + self.wa * loss_a
