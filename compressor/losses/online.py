"""Online distillation: no pretrained teacher, the students teach each other while training.

These register as methods like the rest (``--method dml`` / ``--method one``), but they train a
*network of networks*; ``compressor.train.online`` runs them. Each class builds that network
from the student and computes its loss from its outputs.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, kl_soft


class DMLCohort(nn.Module):
    def __init__(self, peers: list[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [peer(x) for peer in self.peers]

    def members(self) -> dict[str, nn.Module]:
        return {f"peer{i + 1}": p for i, p in enumerate(self.peers)}


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

    def build_network(self, student: nn.Module, make: callable) -> DMLCohort:
        others = [make(a) for a in self.peer_archs[1:]] if self.peer_archs else [make(None) for _ in range(self.num_peers - 1)]
        return DMLCohort([student, *others])

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


class _Gate(nn.Module):
    """ONE's gate: global pool of the shared features -> FC -> BN -> ReLU -> softmax over branches."""

    def __init__(self, channels: int, branches: int):
        super().__init__()
        self.fc = nn.Linear(channels, branches)
        self.bn = nn.BatchNorm1d(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(F.relu(self.bn(self.fc(x.mean((2, 3))))), dim=1)


class ONENetwork(nn.Module):
    """One shared trunk (the student's layers before its last stage) and m branches (the last
    stage, pool and classifier; branch 1 is the student's own, the others copies)."""

    def __init__(self, student: nn.Module, branches: int):
        super().__init__()
        if not hasattr(student, "trunk") or not hasattr(student, "tail_names"):
            raise ValueError(f"ONE branches the last stage of a ResNet; {getattr(student, 'arch', type(student).__name__)} is not one "
                             "(use a resnet* architecture, or DML)")  # fmt: skip
        self.student = student
        tail = nn.ModuleList(student.get_submodule(n) for n in student.tail_names)
        self.extra = nn.ModuleList(copy.deepcopy(tail) for _ in range(branches - 1))
        for copy_ in self.extra:  # a branch of its own initialisation, as in the paper
            for m in copy_.modules():
                if hasattr(m, "reset_parameters") and not isinstance(m, nn.BatchNorm2d):
                    m.reset_parameters()
        self.gate: _Gate | None = None  # sized by ``build_gate`` from one forward of the trunk
        self.branches = branches

    def _tail(self, modules, x: torch.Tensor) -> torch.Tensor:
        *body, classifier = modules
        for m in body:
            x = m(x)
        return classifier(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        shared = self.student.trunk(x)
        if self.gate is None:
            raise RuntimeError("build the gate first (ONENetwork.build_gate)")
        own = [self.student.get_submodule(n) for n in self.student.tail_names]
        logits = [self._tail(own, shared), *(self._tail(list(b), shared) for b in self.extra)]
        return logits, self.gate(shared)

    def build_gate(self, sample: torch.Tensor) -> None:
        with torch.no_grad():
            was = self.student.training
            channels = self.student.eval().trunk(sample).shape[1]
            self.student.train(was)
        self.gate = _Gate(channels, self.branches).to(sample.device)

    def members(self) -> dict[str, nn.Module]:
        return {**{f"branch{i + 1}": _Branch(self, i) for i in range(self.branches)}, "ensemble": _Ensemble(self)}


class _Branch(nn.Module):
    def __init__(self, net: ONENetwork, index: int):
        super().__init__()
        self.net, self.index = [net], index  # a list: not a submodule (no double registration)

    def forward(self, x):
        return self.net[0](x)[0][self.index]


class _Ensemble(nn.Module):
    def __init__(self, net: ONENetwork):
        super().__init__()
        self.net = [net]

    def forward(self, x):
        logits, gate = self.net[0](x)
        return ensemble_logits(logits, gate)


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

    def build_network(self, student: nn.Module, make: callable) -> ONENetwork:
        return ONENetwork(student, self.branches)

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
