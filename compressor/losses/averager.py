import torch

from .base import DistillLoss, LossContext, Outputs


def class_mean_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Thesis 000 eq. 4.4: each sample's teacher logits replaced by the mean of the teacher logits
    of the samples with the same label in the batch, z^_y = 1/N_y sum_{x: label y} z_x."""
    classes = int(labels.max()) + 1 if labels.numel() else 0
    sums = logits.new_zeros(classes, logits.shape[1]).index_add_(0, labels, logits)
    counts = torch.bincount(labels, minlength=classes).clamp_min(1).to(logits.dtype)
    return (sums / counts[:, None])[labels]


class Averager(DistillLoss):
    """Averager student (thesis 000 ch. 4): distil from the per-label batch means of the teacher's
    logits instead of each sample's own, which removes the misleading extra peaks an
    undistillable ("nasty") teacher puts into individual responses. Works with any logit method
    (``base``: kd by default, or skd, wsl, dkd with their own parameters). With an ensemble of
    teachers (``teacher.ensemble``) the logits averaged are the ensemble's mean (the thesis'
    ensemble variant)."""

    kind = "logit"
    default_weight = 1.0

    def __init__(self, base: DistillLoss):
        super().__init__()
        self.base = base

    @classmethod
    def build(cls, ctx: LossContext, base: str = "kd", **base_params) -> "Averager":
        from . import LOSSES

        base_cls = LOSSES.get(base)
        if base_cls.kind != "logit" or base_cls is cls:
            raise ValueError(f"averager needs a logit method as base (kd, skd, wsl, dkd), not {base!r}")
        return cls(base_cls.build(ctx, **base_params))

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        averaged = class_mean_logits(t.logits.detach(), s.labels)
        return self.base(s, Outputs(averaged, t.feats, t.embedding, t.labels, t.index))

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)
