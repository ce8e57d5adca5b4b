"""Training of one network of the scheme, with or without cross-domain hints.

Without hints: the task loss on the network's own domain (the HEVC teacher, the vanilla
student). With hints (000 ch. 5): L = lambda * sum_i L_feat(phi_i(I_t), DA_i(psi_i(I_s))) +
L_task, where phi_i are the frozen teacher's features at its hint points on the teacher-domain
image, psi_i the student's on the paired student-domain image, and DA_i a convolutional domain
adaptor (3x3 conv-BN-ReLU, 1x1 conv to the teacher's width) trained with the student and
dropped afterwards. L_feat is any registered feature loss (AT, CC, FT, ...).

The learning rate follows a cosine schedule over the run, and gradients are clipped to a global
norm of 10 (the YOLO loss spikes in the first steps of a scratch run); both are this
toolchain's choices, the thesis states neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from compressor.models.features import feature_hooks, forward_features

from ..losses import LOSSES, DistillLoss, LossContext, Outputs
from .config import HintSection, OptimSection
from .data import DOMAINS, normalise
from .tasks import backbone_parameters


class DomainAdaptor(nn.Module):
    """DA_i of the thesis (000 eq. 5.6): "a convolutional layer" mapping the student's hint to the
    teacher's width. The kernel size is not given there; ``conv`` is one 3x3 convolution (stride 1,
    padding 1, with bias), as FitNets' regressors; ``deep`` is 3x3-BN-ReLU-1x1, a stronger adaptor."""

    def __init__(self, s_channels: int, t_channels: int, kind: str = "conv"):
        super().__init__()
        if kind == "conv":
            self.body = nn.Sequential(nn.Conv2d(s_channels, t_channels, 3, padding=1))
        elif kind == "deep":
            self.body = nn.Sequential(
                nn.Conv2d(s_channels, t_channels, 3, padding=1, bias=False), nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True),
                nn.Conv2d(t_channels, t_channels, 1),
            )  # fmt: skip
        else:
            raise ValueError(f"adaptor {kind!r}: conv or deep")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@dataclass
class Hints:
    """The frozen teacher, its hint points and the student's, and the trainable parts (adaptors + loss)."""

    teacher: nn.Module
    teacher_domain: str
    teacher_points: list[int]
    student_points: list[int]
    config: HintSection
    adaptors: nn.ModuleList = field(default_factory=nn.ModuleList)
    term: DistillLoss | None = None

    def build(self, student: nn.Module, sample: torch.Tensor) -> None:
        """Size the adaptors and the loss from one dry-run forward pass of both networks."""
        with torch.no_grad():
            t_feats, _ = forward_features(self.teacher, sample, self.teacher_points)
            was_training = student.training
            s_feats, _ = forward_features(student.eval(), sample, self.student_points)
            student.train(was_training)
        t_shapes = [tuple(f.shape[1:]) for f in t_feats.values()]
        s_shapes = [tuple(f.shape[1:]) for f in s_feats.values()]
        self.adaptors = nn.ModuleList(DomainAdaptor(s[0], t[0], self.config.adaptor) for s, t in zip(s_shapes, t_shapes, strict=True))
        ctx = LossContext(tuple(t_shapes), tuple(t_shapes), 0, 0, 1, 1)  # the adaptors output the teacher's widths
        cls = LOSSES.get(self.config.method)
        if cls.kind != "feature":
            raise ValueError(f"hint method {self.config.method!r} is not a feature loss; use at, cc, ft or another hint method")
        self.term = cls.build(ctx, **self.config.params)

    @property
    def weight(self) -> float:
        """lambda; the hint method's usual weight (e.g. AT's 1000) when the config leaves it out."""
        return self.config.weight if self.config.weight is not None else type(self.term).default_weight

    def trainable(self) -> list[nn.Parameter]:
        return list(self.adaptors.parameters()) + list(self.term.parameters())

    def outputs(self, feats: list[torch.Tensor]) -> Outputs:
        b = feats[0].shape[0]
        zeros = feats[0].new_zeros(b, 1)
        return Outputs(zeros, feats, zeros, zeros[:, 0].long(), torch.arange(b))

    def teacher_feats(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            feats, _ = forward_features(self.teacher, normalise(images), self.teacher_points)
        return list(feats.values())


def make_optimizer(model: nn.Module, extra: list[nn.Parameter], cfg: OptimSection) -> torch.optim.Optimizer:
    backbone = backbone_parameters(model)
    ids = {id(p) for p in backbone}
    groups = [
        {"params": backbone, "lr": cfg.lr * cfg.backbone_lr_mult},
        {"params": [p for p in model.parameters() if id(p) not in ids] + extra, "lr": cfg.lr},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: nn.Module, task, loader: DataLoader, domain: str, epochs: int, cfg: OptimSection, size: tuple[int, int],
        hints: Hints | None = None, desc: str = "train", log: Callable[[dict], None] | None = None) -> None:  # fmt: skip
    """Train ``model`` on ``domain`` images for ``epochs`` (cosine schedule), with hints if given."""
    criterion = task.criterion(model)
    d = DOMAINS.index(domain)
    if hints is not None:
        hints.build(model, normalise(next(iter(loader))[d][:2]))
        if hints.config.init_epochs:
            _init_stage(hints, loader, hints.config.init_epochs, cfg)
    extra = hints.trainable() if hints is not None else []
    optimizer = make_optimizer(model, extra, cfg)
    total = max(1, epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
    t_index = DOMAINS.index(hints.teacher_domain) if hints is not None else 0
    captured: dict[int, torch.Tensor] = {}
    context = feature_hooks(model, hints.student_points, captured.__setitem__) if hints is not None else None
    if context is not None:
        context.__enter__()
    try:
        for epoch in range(epochs):
            model.train()
            if hints is not None:
                hints.adaptors.train()
                hints.term.train()
            sums: dict[str, float] = {}
            bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", unit="batch", leave=False, disable=None)
            for batch in bar:
                images, targets = batch[d], batch[2]
                captured.clear()
                parts = task.loss(criterion, model(normalise(images)), targets, size)
                loss = parts["loss"]
                if hints is not None:
                    s_feats = [a(captured[i]) for a, i in zip(hints.adaptors, hints.student_points, strict=True)]
                    hint = hints.term(hints.outputs(s_feats), hints.outputs(hints.teacher_feats(batch[t_index])))
                    parts = {**parts, "hint": hint}
                    loss = loss + hints.weight * hint
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: the loss became {loss.item()} in epoch {epoch + 1}; lower optim.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 10.0)
                optimizer.step()
                schedule.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if log is not None:
                log({"model": desc, "epoch": epoch + 1, **{k: round(v / len(loader), 5) for k, v in sums.items()}})
    finally:
        if context is not None:
            context.__exit__(None, None, None)


def _init_stage(hints: Hints, loader: DataLoader, epochs: int, cfg: OptimSection) -> None:
    """Initialisation losses of the hint method (FT's paraphraser) on teacher features alone."""
    params = list(hints.term.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    t_index = DOMAINS.index(hints.teacher_domain)
    for _ in range(epochs):
        for batch in loader:
            t = hints.outputs(hints.teacher_feats(batch[t_index]))
            loss = hints.term.init_loss(t, t)
            if loss is None:
                raise ValueError(f"hints.init_epochs > 0 but hint method {hints.config.method!r} has no initialisation stage")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
