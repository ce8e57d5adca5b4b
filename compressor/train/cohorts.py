"""The networks online methods train: DML's cohort of peers and ONE's multi-branch network with
its gate, built around the student (``build_cohort``). Their losses are in ``losses.online``."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.online import DML, ONE, ensemble_logits


class DMLCohort(nn.Module):
    def __init__(self, peers: list[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [peer(x) for peer in self.peers]

    def members(self) -> dict[str, nn.Module]:
        return {f"peer{i + 1}": p for i, p in enumerate(self.peers)}


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


def build_cohort(loss: DML | ONE, student: nn.Module, make: Callable[[str | None], nn.Module], sample: torch.Tensor) -> nn.Module:
    """The network ``loss`` trains, around ``student`` (peer 1 / branch 1 with the shared layers);
    ``make(arch)`` builds another peer (None: the student's architecture, its own initialisation);
    ``sample`` (a batch of two images) sizes ONE's gate."""
    if isinstance(loss, DML):
        others = [make(a) for a in loss.peer_archs[1:]] if loss.peer_archs else [make(None) for _ in range(loss.num_peers - 1)]
        return DMLCohort([student, *others])
    net = ONENetwork(student, loss.branches)
    net.build_gate(sample)
    return net
