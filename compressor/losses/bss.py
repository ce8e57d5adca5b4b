"""BSS: knowledge distillation with adversarial samples supporting the decision boundary
(Heo et al., AAAI 2019). Add it to KD as the paper does: ``--method bss+kd``.

The default (``variant="authors"``) is what the authors' code runs (github.com/bhheo/BSS_distillation,
``attacks/attack_BSS.py`` and ``train_BSS_distillation.py``):

- base samples: those the teacher and the student both classify correctly; when there are more
  than ``attack_size`` (64), the ones where they disagree most, sum over c != y of (p_t,c - p_s,c)^2;
- target class: drawn among the teacher's other classes with probability proportional to its
  softmax;
- attack on the teacher, from class b (its prediction) towards the target k, at most ``steps``
  times: x <- clamp(x + eta * (z_b - z_k + 1e-4) * g / ||g||_2, -2.5, 2.5) with g = grad (z_k - z_b),
  eta = 0.3; a sample stops once the teacher's top class is no longer b (any class overtook);
- loss: soft cross-entropy -sum_c softmax(z_t(x^)/T)_c log softmax(z_s(x^)/T)_c averaged over the
  attacked samples, no T^2 (its gradient is KL's without the T^2 factor);
- weight 2 * max(1 - 4/3 * e / E, 0) at (1-based) epoch e of E: 2 -> 0 at 75 % of training
  (``until=0.75``). The authors also ramp their KD weight 4 -> 1 over the run; with
  ``loss.schedules.kd`` the engine does the same (see ``train/examples/bss.yaml``).

``variant="paper"`` is the earlier reading of the paper's text (DeepFool-style step): a step
divided by ||g||^2 without clamping, the runner-up class as target, the first teacher-correct
samples (``ratio`` of the batch), stopping when the target overtakes, T^2 * KL, and a weight
decaying linearly to 0 over ``decay_epochs``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs, PrepareContext, kl_soft

VARIANTS = ("authors", "paper")


def boundary_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int, eta: float, eps: float = 1e-4,
                    power: int = 1, clamp: float | None = 2.5, base: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Move each x towards the boundary between its class b and ``target`` k of ``model``.

    Args:
        x: inputs (B, ...).
        target: (B,) target classes.
        power: the step divides by ||g||_2 ** power: 1 is the authors' code, 2 DeepFool's (the paper's text).
        clamp: inputs are kept in [-clamp, clamp] (normalised pixels), None for no clamping.
        base: (B,) the class each sample starts from and stops leaving. None (the authors' code): the
            model's prediction, and a sample stops as soon as any other class becomes the top one;
            given: a sample stops once ``target`` scores above ``base``.

    Returns:
        The moved inputs, detached.
    """
    x = x.detach().clone()
    rows = torch.arange(len(x), device=x.device)
    per_sample = (-1,) + (1,) * (x.dim() - 1)  # broadcasts a (B,) vector over the sample's dims
    b = base
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            z = model(x)
            if b is None:  # the authors' GT_var: the prediction on the unmoved input
                b = z.detach().argmax(1)
            toward = z[rows, target] - z[rows, b]  # the authors' loss: z_k - z_b
            (grad,) = torch.autograd.grad(toward.sum(), x)
        with torch.no_grad():
            active = z.argmax(1) == b if base is None else toward < 0
            if not active.any():
                break
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12) ** power
            x = x.detach() + (eta * active.to(grad.dtype) * (eps - toward) / norm).view(per_sample) * grad
            if clamp is not None:
                x = x.clamp(-clamp, clamp)
    return x.detach()


def disagreement_order(p_t: torch.Tensor, p_s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices sorting samples by sum over c != y of (p_t,c - p_s,c)^2, largest first (the authors' base-sample rank)."""
    diff = (p_t - p_s) ** 2
    score = diff.sum(1) - diff.gather(1, labels[:, None]).squeeze(1)
    return score.argsort(descending=True)


def sample_targets(p_t: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """A class other than the teacher's top one, drawn with probability proportional to ``p_t``.

    Args:
        p_t: (B, C) teacher probabilities.
        uniform: (B,) draws from U(0, 1).
    """
    scores, classes = p_t.sort(1, descending=True)
    scores, classes = scores[:, 1:], classes[:, 1:]
    seed = scores.sum(1) * uniform
    first = (scores.cumsum(1) < seed[:, None]).sum(1).clamp_max(scores.shape[1] - 1)  # first c with cumsum >= seed
    return classes.gather(1, first[:, None]).squeeze(1)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-sum_c softmax(t/T)_c log softmax(s/T)_c, averaged over the batch (no T^2)."""
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return -(p_t * F.log_softmax(student_logits / temperature, dim=1)).sum(1).mean()


class BSS(DistillLoss):
    kind = "logit"
    default_weight = 2.0  # the weight at the start of training

    def __init__(self, models: dict | None = None, T: float = 3.0, steps: int = 10, eta: float | None = None, attack_size: int = 64,
                 variant: str = "authors", until: float = 0.75, ratio: float = 0.25, decay_epochs: int | None = None):  # fmt: skip
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: one of {', '.join(VARIANTS)}")
        eta = eta if eta is not None else (0.3 if variant == "authors" else 1.0)
        if not 0 < ratio <= 1 or steps < 1 or eta <= 0 or T <= 0 or attack_size < 1 or not 0 < until <= 1:
            raise ValueError(f"need 0 < ratio <= 1, steps >= 1, eta > 0, T > 0, attack_size >= 1, 0 < until <= 1 (got {ratio}, {steps}, "
                             f"{eta}, {T}, {attack_size}, {until})")  # fmt: skip
        self._models = models or {}  # the engine's teacher and student modules (not registered here)
        self.T, self.steps, self.eta, self.attack_size, self.variant = T, steps, eta, attack_size, variant
        self.until, self.ratio, self.decay_epochs = until, ratio, decay_epochs
        self.scale = 1.0

    @classmethod
    def build(cls, ctx: LossContext, models=None, **params) -> BSS:
        if models is None:
            raise ValueError("bss attacks the teacher during training: run it through compressor distill")
        return cls(models, **params)

    @classmethod
    def prepare(cls, ctx: PrepareContext) -> dict:
        return {"models": {"teacher": ctx.teacher, "student": ctx.student}, "decay_epochs": ctx.params.get("decay_epochs", ctx.epochs)}

    def set_epoch(self, epoch: int) -> None:
        """The weight's schedule at 0-based ``epoch``: see the module docstring for each variant."""
        if not self.decay_epochs:
            self.scale = 1.0
        elif self.variant == "authors":
            self.scale = max(0.0, 1.0 - (max(epoch, 0) + 1) / (self.until * self.decay_epochs))
        else:
            self.scale = max(0.0, 1.0 - max(epoch, 0) / self.decay_epochs)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        zero = s.logits.new_zeros(())
        if s.inputs is None or self.scale == 0:
            return zero
        teacher, student = self._models["teacher"], self._models["student"]
        if self.variant == "paper":
            return self._paper(s, t, teacher, student, zero)
        z_t, z_s = t.logits.detach(), s.logits.detach()
        chosen = ((z_t.argmax(1) == s.labels) & (z_s.argmax(1) == s.labels)).nonzero().flatten()
        if len(chosen) == 0:
            return zero
        p_t = F.softmax(z_t[chosen], 1)
        if len(chosen) > self.attack_size:
            chosen = chosen[disagreement_order(p_t, F.softmax(z_s[chosen], 1), s.labels[chosen])[: self.attack_size]]
            p_t = F.softmax(z_t[chosen], 1)
        target = sample_targets(p_t, torch.rand(len(chosen), device=p_t.device, dtype=p_t.dtype))
        x_adv = boundary_attack(teacher, s.inputs[chosen], target, self.steps, self.eta)
        with torch.no_grad():
            z_adv = teacher(x_adv)
        return self.scale * soft_cross_entropy(student(x_adv), z_adv, self.T)

    def _paper(self, s: Outputs, t: Outputs, teacher: nn.Module, student: nn.Module, zero: torch.Tensor) -> torch.Tensor:
        top2 = t.logits.detach().topk(2, dim=1).indices
        correct = (top2[:, 0] == s.labels).nonzero().flatten()
        chosen = correct[: max(1, round(self.ratio * len(s.labels)))]
        if len(chosen) == 0:
            return zero
        x_adv = boundary_attack(teacher, s.inputs[chosen], top2[chosen, 1], self.steps, self.eta, power=2, clamp=None,
                                base=s.labels[chosen])  # fmt: skip
        with torch.no_grad():
            z_adv = teacher(x_adv)
        return self.scale * kl_soft(student(x_adv), z_adv, self.T)
