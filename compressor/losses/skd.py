import torch

from .base import DistillLoss, Outputs, kl_soft


class SKD(DistillLoss):
    """Spherical KD, Guo et al. 2020 (arXiv 2010.07485; github.com/forjiuzhou/Spherical-Knowledge-Distillation):
    the logits are put on a sphere before Hinton's KD, which removes the logit-magnitude gap between
    a large teacher and a small student. Two readings, both the authors':

    - ``variant: norm`` (default): the paper's and the authors' README's ``F.normalize`` form, as
      PURSUhInT describes it: both logit vectors scaled to unit L2 norm and multiplied by the
      batch's mean teacher logit norm.
    - ``variant: script``: the authors' training script ``skd_main.py``: the student's logits are
      rescaled per sample to the teacher's standard deviation (``output / std_s * std_t``, no
      centring), the teacher's logits stay as they are.

    The two give different values on the same tensors. In both, the authors' cross-entropy reads
    the rescaled student logits ("the Cross Entropy loss has to use the normalized logits as
    input"); ``ce_scaled: true`` (default) does the same through ``ce_logits``, ``false`` leaves
    the engine's CE on the raw logits. The scaling is positive per sample, so top-1 is unchanged."""

    kind = "logit"
    default_weight = 1.0

    def __init__(self, T: float = 4.0, eps: float = 1e-8, variant: str = "norm", ce_scaled: bool = True):
        super().__init__()
        if T <= 0:
            raise ValueError(f"SKD temperature T must be > 0, got {T}")
        if variant not in ("norm", "script"):
            raise ValueError(f"SKD variant {variant!r}: norm (the paper's / README's F.normalize form) or script (skd_main.py)")
        self.T, self.eps, self.variant, self.ce_scaled = T, eps, variant, ce_scaled

    def scaled(self, s: Outputs, t: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(student, teacher) logits on the sphere."""
        zt = t.logits.detach()
        if self.variant == "script":
            return s.logits / s.logits.std(dim=-1, keepdim=True) * zt.std(dim=-1, keepdim=True), zt
        t_norm = zt.norm(dim=1, keepdim=True)
        radius = t_norm.mean()
        return s.logits / (s.logits.norm(dim=1, keepdim=True) + self.eps) * radius, zt / (t_norm + self.eps) * radius

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return kl_soft(*self.scaled(s, t), self.T)

    def ce_logits(self, s: Outputs, t: Outputs) -> torch.Tensor | None:
        return self.scaled(s, t)[0] if self.ce_scaled else None
