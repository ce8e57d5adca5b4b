"""Online distillation: no pretrained teacher, the students teach each other while training.

These register as methods like the rest (``--method dml`` / ``--method one``), but they train a
*network of networks*: ``compressor.train.cohorts`` builds it from the student, and
``compressor.train.online`` runs it on the training loop. Each class here is the method's math:
its loss from that network's outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import DistillLoss, kl_soft


class DML(DistillLoss):
    """Deep mutual learning (Zhang et al., CVPR 2018): a cohort of K peers (any size >= 2; by
    default copies of the student architecture with their own initialisation, or the archs in
    ``peers``), each trained with L_k = CE(z_k, y) + 1/(K-1) sum_{l != k} KL(p_l || p_k), the other
    peers' posteriors (temperature ``T``, 1 in the paper; x T^2 otherwise) taken as fixed targets. The paper
    updates the peers one after the other within a step; here all are updated together from
    the same batch, the usual simultaneous form. Peer 1 is saved as the student."""

    kind = "online"

    def __init__(self, num_peers: int = 2, T: float = 1.0, peers: list[str] | None = None):
        super().__init__()
        if (peers and len(peers) < 2) or (not peers and num_peers < 2):
            raise ValueError("DML needs a cohort of at least 2 peers")
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        self.num_peers, self.T, self.peer_archs = (len(peers) if peers else num_peers), T, peers

    def network_loss(self, outputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        total = outputs[0].new_zeros(())
        k = len(outputs)
        for i, z in enumerate(outputs):
            ce = F.cross_entropy(z, labels)
            mimic = sum(kl_soft(z, outputs[j].detach(), self.T) for j in range(k) if j != i) / (k - 1)  # x T^2 as in KD
            parts[f"ce{i + 1}"], parts[f"kl{i + 1}"] = ce, mimic
            total = total + ce + mimic
        return {"loss": total, **parts}


def sigmoid_rampup(epoch: int, length: int) -> float:
    """exp(-5 (1 - t)^2), t = clip(epoch / length, 0, 1): the mean-teacher ramp ONE's authors use; 1 when length is 0."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(epoch, 0), length) / length
    return math.exp(-5.0 * phase * phase)


def ensemble_logits(logits: list[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
    """ONE's gated teacher: z_e = sum_i g_i z_i."""
    return (torch.stack(logits, 1) * gate[:, :, None]).sum(1)


class ONE(DistillLoss):
    """On-the-fly native ensemble (Lan et al., NeurIPS 2018): m branches share the low-level
    layers; a gate weights their logits into an ensemble teacher z_e = sum_i g_i z_i; loss =
    sum_i CE(z_i, y) + CE(z_e, y) + w(e) T^2 sum_i KL(softmax(z_e / T) || softmax(z_i / T)), T = 3.
    w(e) is the authors' ramp (github.com/Lan1991Xu/ONE_NeurIPS2018: ``consistency_rampup`` 80,
    ``sigmoid_rampup``): exp(-5 (1 - min(e, R) / R)^2) over R = ``rampup`` epochs, 1 afterwards;
    ``rampup=0`` switches it off (the paper's text has no ramp). The teacher's soft targets are taken
    as fixed (detached), as most re-implementations do. Branch 1, with the shared layers, is a plain
    zoo model and is saved as the student."""

    kind = "online"

    def __init__(self, branches: int = 3, T: float = 3.0, rampup: int = 80):
        super().__init__()
        if branches < 2:
            raise ValueError("ONE needs at least 2 branches")
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        if rampup < 0:
            raise ValueError(f"rampup must be >= 0 epochs, got {rampup}")
        self.branches, self.T, self.rampup = branches, T, rampup
        self.kl_weight = sigmoid_rampup(0, rampup)

    def set_epoch(self, epoch: int) -> None:
        self.kl_weight = sigmoid_rampup(epoch, self.rampup)

    def network_loss(self, outputs: tuple[list[torch.Tensor], torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, gate = outputs
        teacher = ensemble_logits(logits, gate)
        parts = {"ce_ensemble": F.cross_entropy(teacher, labels)}
        total = parts["ce_ensemble"]
        for i, z in enumerate(logits):
            parts[f"ce{i + 1}"] = F.cross_entropy(z, labels)
            parts[f"kl{i + 1}"] = kl_soft(z, teacher.detach(), self.T)
            total = total + parts[f"ce{i + 1}"] + self.kl_weight * parts[f"kl{i + 1}"]
        return {"loss": total, **parts}
