import math

import torch
from torch import nn

from .adapters import Embed
from .base import DistillLoss, LossContext, Outputs


class ContrastMemory(nn.Module):
    """Two memory banks (student-side and teacher-side embeddings of every training sample),
    momentum-updated; scores against K sampled negatives, exp(v . m / tau) / Z (CRD eq. 19)."""

    def __init__(self, dim: int, num_data: int, k: int, tau: float, momentum: float):
        super().__init__()
        self.num_data, self.k, self.tau, self.momentum = num_data, k, tau, momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(num_data, dim) * 2 * stdv - stdv)
        self.register_buffer("memory_t", torch.rand(num_data, dim) * 2 * stdv - stdv)
        self.register_buffer("z", torch.tensor([-1.0, -1.0]))  # normalising constants, fixed on the first batch

    def forward(self, v_s: torch.Tensor, v_t: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = len(index)
        negatives = torch.randint(self.num_data, (b, self.k), device=index.device)  # uniform, as CRD's AliasMethod over equal weights
        idx = torch.cat([index[:, None], negatives], dim=1)  # (B, K+1): column 0 is the positive
        out_t = torch.exp(torch.bmm(self.memory_s[idx].detach(), v_t[:, :, None]).squeeze(2) / self.tau)
        out_s = torch.exp(torch.bmm(self.memory_t[idx].detach(), v_s[:, :, None]).squeeze(2) / self.tau)
        if self.z[0] < 0:
            self.z.copy_(torch.stack([out_s.mean(), out_t.mean()]).detach() * self.num_data)
        out_s, out_t = out_s / self.z[0], out_t / self.z[1]
        with torch.no_grad():
            for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                updated = bank[index] * self.momentum + v.detach() * (1 - self.momentum)
                bank[index] = nn.functional.normalize(updated, dim=1)
        return out_s, out_t


def nce_loss(scores: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """CRD's NCE objective: positive in column 0, K noise samples with P_n = 1 / num_data."""
    b, k = scores.shape[0], scores.shape[1] - 1
    mpn = k / num_data
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + mpn + eps))
    log_d0 = torch.log(mpn / (scores[:, 1:] + mpn + eps))
    return -(log_d1.sum() + log_d0.sum()) / b


class CRD(DistillLoss):
    """Contrastive representation distillation, Tian et al. 2020 (ICLR): student and teacher
    penultimate embeddings are projected to 128-d unit vectors; an NCE loss with a memory bank of
    every training sample makes the pair from the same image score higher than K = 16384
    negatives, in both directions (tau = 0.07, memory momentum 0.5). Needs the loader's sample
    indices (every dataset here yields them). Negatives are drawn uniformly over the data."""

    kind = "embedding"
    default_weight = 0.8

    def __init__(self, embed_s: Embed, embed_t: Embed, memory: ContrastMemory):
        super().__init__()
        self.embed_s, self.embed_t, self.memory = embed_s, embed_t, memory

    @classmethod
    def build(cls, ctx: LossContext, feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07, momentum: float = 0.5) -> "CRD":
        k = min(nce_k, max(1, ctx.num_data - 1))
        return cls(
            Embed(ctx.student_embed, feat_dim),
            Embed(ctx.teacher_embed, feat_dim),
            ContrastMemory(feat_dim, ctx.num_data, k, nce_t, momentum),
        )

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        out_s, out_t = self.memory(self.embed_s(s.embedding), self.embed_t(t.embedding.detach()), s.index)
        return nce_loss(out_s, self.memory.num_data) + nce_loss(out_t, self.memory.num_data)
