import torch

from .base import DistillLoss, Outputs


def _conditional(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Cosine similarities shifted to [0, 1] and normalised per row into probabilities."""
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    sim = (x @ x.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


class PKT(DistillLoss):
    """Probabilistic knowledge transfer, Passalis & Tefas 2018: KL divergence between the
    teacher's and the student's conditional probability distributions of the samples of a
    batch, from cosine-similarity kernels on the penultimate embeddings."""

    kind = "embedding"
    default_weight = 30000.0

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = eps

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        p_s = _conditional(s.embedding, self.eps)
        p_t = _conditional(t.embedding.detach(), self.eps)
        return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()
