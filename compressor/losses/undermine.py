import torch

from .base import DistillLoss, Outputs, kl_soft


class SelfUndermining(DistillLoss):
    """Self-undermining KD (Ma et al., ICLR 2021, "Undistillable: making a nasty teacher"), the
    tool that makes an undistillable teacher for the averager experiments (thesis 000 ch. 4).
    Here the *student* being trained is the nasty teacher and the frozen *teacher* is a normally
    trained adversarial network A: L = CE(z_T, y) - omega * tau^2 * KL(softmax(z_A / tau) ||
    softmax(z_T / tau)), i.e. this term is the negated KD term (weight omega, default 0.04 with
    tau = 4 as the paper uses on CIFAR-10). Run: ``compressor distill --teacher normal.pth
    --student ARCH --method undermine``; the saved student is the nasty teacher."""

    kind = "logit"
    default_weight = 0.04

    def __init__(self, T: float = 4.0):
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.T = T

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        return -kl_soft(s.logits, t.logits.detach(), self.T)
