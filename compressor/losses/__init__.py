"""Distillation losses, one per module, registered by name; combinations come from config.

``build_objective("crd+at+kd", ctx, ...)`` gives L = gamma * CE + sum_m w_m * L_m (001 eq. 8/9):
logit terms take alpha, hint terms beta (summed over hint pairs inside each loss), and every
term's weight can be set by name. The objective returns every term by name for logging.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compressor.models import Registry

from .ab import AB
from .afd import AFD
from .at import AT
from .averager import Averager
from .base import DistillLoss, LossContext, Outputs, PrepareContext
from .bss import BSS
from .cc import CC
from .crd import CRD
from .dkd import DKD
from .ekd import EKD
from .fitnet import FitNet
from .fsp import FSP
from .ft import FT
from .kd import KD
from .letkd import LetKD
from .nst import NST
from .online import DML, ONE
from .pkt import PKT
from .rkd import RKD
from .skd import SKD
from .sp import SP
from .undermine import SelfUndermining
from .vid import VID
from .wsl import WSL

LOSSES: Registry[type[DistillLoss]] = Registry("distillation method")
for _name, _cls in {
    "kd": KD, "skd": SKD, "wsl": WSL, "dkd": DKD,
    "fitnet": FitNet, "at": AT, "vid": VID, "crd": CRD, "afd": AFD, "sp": SP, "pkt": PKT,
    "rkd": RKD, "cc": CC, "nst": NST, "ab": AB, "ft": FT, "fsp": FSP,
    "ekd": EKD, "averager": Averager, "undermine": SelfUndermining, "dml": DML, "one": ONE, "letkd": LetKD, "bss": BSS,
}.items():  # fmt: skip
    LOSSES.register(_name, _cls)


def online_method(method: str | list[str]) -> str | None:
    """The online method (dml, one) that ``method`` names, or None; online methods stand alone."""
    names = parse_method(method)
    online = [n for n in names if LOSSES.get(n).kind == "online"]
    if online and len(names) > 1:
        others = [n for n in names if n not in online]
        raise ValueError(f"{online[0]} trains a cohort without a teacher and cannot be combined with {others}")
    return online[0] if online else None


def needs_hints(method: str | list[str]) -> bool:
    """Whether any term of ``method`` reads hint features (so hint points must be resolved)."""
    return any(LOSSES.get(n).kind == "feature" for n in parse_method(method))


def needs_student_hints(method: str | list[str]) -> bool:
    """Whether any term reads the student's hint features (EKD reads only the teacher's)."""
    return any(LOSSES.get(n).kind == "feature" and LOSSES.get(n).reads_student_feats for n in parse_method(method))


def parse_method(method: str | list[str]) -> list[str]:
    """``"crd+at+kd"`` or ``["crd", "at", "kd"]`` -> validated names; ``"ce"`` or ``""`` -> [] (CE only).
    An empty term (``"+"``, ``"at++kd"``, ``"at+"``) is refused: it is a typo, not CE."""
    names = method if isinstance(method, list) else [m.strip() for m in method.split("+")]
    if len(names) > 1 and not all(names):
        raise ValueError(f"method {method!r} has an empty term between its '+' signs; write terms such as at+kd")
    names = [n for n in names if n and n != "ce"]
    for n in names:
        LOSSES.get(n)  # raises UnknownNameError listing the known methods
    if len(set(names)) != len(names):
        raise ValueError(f"method {method!r} names a loss twice")
    return names


class Objective(nn.Module):
    """gamma * CE(student, labels) + sum of weighted distillation terms."""

    def __init__(self, terms: dict[str, DistillLoss], weights: dict[str, float], gamma: float,
                 schedules: dict[str, tuple[float, float, float]] | None = None, epochs: int = 1):  # fmt: skip
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.gamma = gamma
        self.schedules, self.epochs = dict(schedules or {}), epochs  # name -> (start, end, until)

    @property
    def needs_features(self) -> bool:
        return any(t.kind == "feature" for t in self.terms.values())

    def forward(self, s: Outputs, t: Outputs | None) -> dict[str, torch.Tensor]:
        scaled = [z for term in self.terms.values() if term.in_distillation and (z := term.ce_logits(s, t)) is not None]
        ce = F.cross_entropy(scaled[0] if scaled else s.logits, s.labels)  # SKD: its rescaled logits (one term at most: names are unique)
        parts = {"ce": ce}
        total = self.gamma * ce
        for name, term in self.terms.items():
            if not term.in_distillation:  # AB, FSP (RepDistiller), FitNets' two stages: initialisation only
                parts[name] = ce.new_zeros(())
                continue
            value = term(s, t)
            parts[name] = value
            total = total + self.weights[name] * value
        return {"loss": total, **parts}

    def init_forward(self, s: Outputs, t: Outputs) -> dict[str, torch.Tensor]:
        """The initialisation stage's loss: the terms' ``init_loss`` only (no CE, no logit terms)."""
        parts = {name: v for name, term in self.terms.items() if (v := term.init_loss(s, t)) is not None}
        if not parts:
            raise ValueError("init_epochs > 0 but no method has an initialisation stage (fitnet two_stage, ab, fsp, ft, ekd)")
        return {"loss": sum(parts.values()), **parts}

    def set_epoch(self, epoch: int) -> None:
        """Every term's own schedule, then the weight ramps at 0-based distillation ``epoch``."""
        for term in self.terms.values():
            term.set_epoch(epoch)
        for name, (start, end, until) in self.schedules.items():
            weight = ramp(start, end, until, epoch, self.epochs)
            if name == "ce":
                self.gamma = weight
            else:
                self.weights[name] = weight


def ramp(start: float, end: float, until: float, epoch: int, epochs: int) -> float:
    """``start`` -> ``end`` linearly, reached at ``until`` of ``epochs``; ``epoch`` is 0-based (the formula's e is 1-based)."""
    return end + (start - end) * max(1.0 - (max(epoch, 0) + 1) / (until * epochs), 0.0)


def build_objective(
    method: str | list[str],
    ctx: LossContext,
    gamma: float = 1.0,
    alpha: float | None = None,
    beta: float | None = None,
    weights: dict[str, float] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    schedules: dict[str, tuple[float, float, float]] | None = None,
    epochs: int = 1,
) -> Objective:
    """Build the terms of ``method`` with their adapters sized from ``ctx``.

    Weight of a term: ``weights[name]`` if given, else ``alpha`` (logit terms) or ``beta``
    (hint terms) if given, else the method's RepDistiller default; ``schedules[name]`` =
    (start, end, until) replaces it by a ramp over ``epochs`` (``ramp``).

    Raises:
        UnknownNameError: an unknown method name.
        ValueError: bad parameters for a method (the message names it), or unused settings.
    """
    names = parse_method(method)
    weights, params = dict(weights or {}), dict(params or {})
    schedules = dict(schedules or {})
    stray = (set(weights) | set(params) | set(schedules)) - set(names) - {"ce"}
    if stray:
        raise ValueError(f"weights/params/schedules given for {sorted(stray)} which are not in method {'+'.join(names) or 'ce'}")
    terms, resolved = {}, {}
    for name in names:
        cls = LOSSES.get(name)
        try:
            terms[name] = cls.build(ctx, **params.get(name, {}))
        except TypeError as e:
            raise ValueError(f"bad parameters for method {name!r}: {e}") from None
        except ValueError as e:
            raise ValueError(f"method {name!r}: {e}") from None
        group = alpha if cls.kind == "logit" else beta
        resolved[name] = float(weights.get(name, group if group is not None else cls.default_weight))
    objective = Objective(terms, resolved, float(weights.get("ce", gamma)), schedules, epochs)
    objective.set_epoch(0)
    return objective


__all__ = [
    "online_method", "LOSSES", "DistillLoss", "LossContext", "PrepareContext", "Outputs", "Objective", "build_objective", "parse_method",
    "needs_hints", "needs_student_hints",
]  # fmt: skip
