"""BSS: knowledge distillation with adversarial samples supporting the decision boundary
(Heo et al., AAAI 2019), seed 004's "explicitly matches the decision boundary".

For part of each batch (``ratio``), samples the teacher classifies correctly are pushed by an
iterative attack on the teacher from their class b towards the teacher's runner-up class k:
with L(x) = z_b(x) - z_k(x), x <- x - eta * (L(x) + eps) / ||grad L||^2 * grad L (the
boundary-seeking step the paper builds on DeepFool), at most ``steps`` times, stopping per
sample once L <= 0. The student then matches the teacher on these boundary-supporting samples,
T^2 * KL(softmax(z_t(x^) / T) || softmax(z_s(x^) / T)), with a weight that decays linearly to
0 over training (``decay_epochs``; the paper decays it over the run). Add it to KD as in the
paper: ``--method bss+kd``. The step size, step count and ratio are the paper's kind of
settings recalled here, not quoted: they are parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DistillLoss, LossContext, Outputs, kl_soft


def boundary_attack(model: nn.Module, x: torch.Tensor, base: torch.Tensor, target: torch.Tensor, steps: int, eta: float,
                    eps: float = 1e-4) -> torch.Tensor:  # fmt: skip
    """Move each x towards the boundary between its ``base`` and ``target`` classes of ``model``."""
    x = x.detach().clone()
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    rows = torch.arange(len(x), device=x.device)
    per_sample = (-1,) + (1,) * (x.dim() - 1)  # broadcasts a (B,) vector over the sample's dims
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            z = model(x)
            gap = z[rows, base] - z[rows, target]
            (grad,) = torch.autograd.grad(gap.sum(), x)
        with torch.no_grad():
            active &= gap > 0
            if not active.any():
                break
            norm2 = grad.flatten(1).pow(2).sum(1).clamp_min(1e-12)
            step = (eta * (gap + eps) / norm2 * active).view(per_sample) * grad
            x = (x - step).detach()
    return x.detach()


class BSS(DistillLoss):
    kind = "logit"
    default_weight = 2.0  # beta at the start of training

    def __init__(self, models: dict | None = None, T: float = 3.0, ratio: float = 0.25, steps: int = 10, eta: float = 1.0,
                 decay_epochs: int | None = None):  # fmt: skip
        super().__init__()
        if not 0 < ratio <= 1 or steps < 1 or eta <= 0 or T <= 0:
            raise ValueError(f"need 0 < ratio <= 1, steps >= 1, eta > 0, T > 0 (got {ratio}, {steps}, {eta}, {T})")
        self._models = models or {}  # the engine's teacher and student modules (not registered here)
        self.T, self.ratio, self.steps, self.eta = T, ratio, steps, eta
        self.decay_epochs = decay_epochs
        self.scale = 1.0

    @classmethod
    def build(cls, ctx: LossContext, models=None, **params) -> BSS:
        if models is None:
            raise ValueError("bss attacks the teacher during training: run it through compressor distill")
        return cls(models, **params)

    @staticmethod
    def prepare(teacher: nn.Module, student: nn.Module, dataset, t_points, s_points, params: dict, device, epochs: int) -> dict:
        return {"models": {"teacher": teacher, "student": student}, "decay_epochs": params.get("decay_epochs", epochs)}

    def set_epoch(self, epoch: int) -> None:
        """Linear decay of the weight from 1 (x the term's weight) at epoch 0 to 0 at ``decay_epochs``."""
        self.scale = max(0.0, 1.0 - max(epoch, 0) / self.decay_epochs) if self.decay_epochs else 1.0

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        zero = s.logits.new_zeros(())
        if s.inputs is None or self.scale == 0:
            return zero
        teacher, student = self._models["teacher"], self._models["student"]
        top2 = t.logits.detach().topk(2, dim=1).indices
        correct = (top2[:, 0] == s.labels).nonzero().flatten()
        chosen = correct[: max(1, round(self.ratio * len(s.labels)))]
        if len(chosen) == 0:
            return zero
        x_adv = boundary_attack(teacher, s.inputs[chosen], s.labels[chosen], top2[chosen, 1], self.steps, self.eta)
        with torch.no_grad():
            z_t = teacher(x_adv)
        return self.scale * kl_soft(student(x_adv), z_t, self.T)
