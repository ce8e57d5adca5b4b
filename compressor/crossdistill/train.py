"""Training of one network of the scheme, with or without cross-domain hints.

Without hints: the task loss on the network's own domain (the HEVC teacher, the vanilla
student). With hints (000 ch. 5): L = lambda * sum_i L_feat(phi_i(I_t), DA_i(psi_i(I_s))) +
L_task, where phi_i are the frozen teacher's features at its hint points on the teacher-domain
image, psi_i the student's on the paired student-domain image, and DA_i a convolutional domain
adaptor (3x3 conv-BN-ReLU, 1x1 conv to the teacher's width) trained with the student and
dropped afterwards. L_feat is any registered feature loss (AT, CC, FT, ...).

Each network trains as a task of the one training loop (``compressor.train.loop``): AMP,
torchrun DDP, exact ``--resume``, the divergence stop and metrics come from there. The optimiser
section is ``compressor distill``'s; the examples use a cosine schedule and clip gradients to a
global norm of 10 (the YOLO loss spikes in the first steps of a scratch run); both are this
toolchain's choices, the thesis states neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from compressor.models.features import feature_hooks, forward_features

from ..distributed import World
from ..losses import LOSSES, DistillLoss, LossContext, Outputs
from ..train.data import train_loader
from ..train.loop import Task
from ..train.parts import schedule_factor
from .config import HintSection, OptimSection
from .data import DOMAINS, collate, normalise
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
        """Size the adaptors and the loss from one dry-run forward pass of both networks. Built once:
        a later stage on the same hints (quantization-aware fine-tuning) continues with the trained
        adaptors and loss rather than fresh ones."""
        if self.term is not None:
            return
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
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class CrossTrainee(nn.Module):
    """The network being trained, its domain adaptors and the hint loss as one module (so that DDP
    syncs them together); ``forward`` returns the named loss terms of one paired batch."""

    def __init__(self, model: nn.Module, kind, domain: str, size: tuple[int, int], hints: Hints | None):
        super().__init__()
        self.model, self.kind, self.size, self.hints = model, kind, size, hints
        self.domain = DOMAINS.index(domain)
        self.criterion = kind.criterion(model)
        if hints is not None:
            self.adaptors, self.term = hints.adaptors, hints.term
        self.captured: dict[int, torch.Tensor] = {}
        self.init_stage = False

    def forward(self, batch) -> dict[str, torch.Tensor]:
        h = self.hints
        if self.init_stage:  # the hint method's initialisation (FT's paraphraser) on teacher features alone
            t = h.outputs(h.teacher_feats(batch[DOMAINS.index(h.teacher_domain)]))
            init = self.term.init_loss(t, t)
            return {"loss": init, "init": init}
        self.captured.clear()
        parts = self.kind.loss(self.criterion, self.model(normalise(batch[self.domain])), batch[2], self.size)
        if h is None:
            return parts
        s_feats = [a(self.captured[i]) for a, i in zip(self.adaptors, h.student_points, strict=True)]
        hint = self.term(h.outputs(s_feats), h.outputs(h.teacher_feats(batch[DOMAINS.index(h.teacher_domain)])))
        return {**parts, "loss": parts["loss"] + h.weight * hint, "hint": hint}


class CrossTask(Task):
    """One network of the scheme as a task of the loop: the task loss on its own domain, plus
    lambda times the hint loss through the domain adaptors when ``hints`` are given (after the hint
    method's initialisation stage, ``hints.init_epochs``). The learning rate follows ``optim``'s
    schedule over the epochs of training proper, the backbone's scaled by ``backbone_lr_mult``."""

    def __init__(self, model: nn.Module, kind, train_set, test_set, domain: str, cfg: OptimSection, size: tuple[int, int],
                 epochs: int, seed: int, device: torch.device, world: World, hints: Hints | None = None):  # fmt: skip
        self.kind, self.metric, self.cfg, self.size, self.epochs, self.seed = kind, kind.metric, cfg, size, epochs, seed
        self.train_set, self.test_set, self.domain, self.device, self.world = train_set, test_set, DOMAINS.index(domain), device, world
        model.to(device)
        if hints is not None:
            sample = next(iter(DataLoader(train_set, 2, collate_fn=collate)))
            hints.build(model, normalise(sample[self.domain].to(device)))
            hints.adaptors.to(device)
            hints.term.to(device)
        self.init_epochs = hints.config.init_epochs if hints is not None else 0
        if self.init_epochs and not hints.term.has_init_stage:
            raise ValueError(f"hints.init_epochs > 0 but hint method {hints.config.method!r} has no initialisation stage")
        self.core = CrossTrainee(model, kind, domain, size, hints)
        self.module = self.core
        self._hooks = feature_hooks(model, hints.student_points, self.core.captured.__setitem__) if hints is not None else None
        if self._hooks is not None:
            self._hooks.__enter__()
        self.wrapped = self.core if not world.distributed else nn.parallel.DistributedDataParallel(
            self.core, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)  # fmt: skip
        self.optimizer = make_optimizer(model, hints.trainable() if hints is not None else [], cfg)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]

    @property
    def total_epochs(self) -> int:
        return self.init_epochs + self.epochs

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        self.core.init_stage = epoch < self.init_epochs
        factor = schedule_factor(self.cfg, epoch - self.init_epochs, self.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return {"stage": "init" if self.core.init_stage else "train", "lr": self.cfg.lr * factor}

    def batches(self, epoch: int):
        loader = train_loader(self.train_set, self.cfg.batch_size, self.cfg.workers, self.seed, epoch, self.world, collate_fn=collate)
        for batch in loader:
            yield tuple(x.to(self.device) for x in batch)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        return self.wrapped(batch)

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def train(self) -> None:
        self.wrapped.train()
        if self.core.hints is not None:
            self.core.hints.teacher.eval()

    def evaluate(self) -> dict[str, float]:
        loader = DataLoader(self.test_set, self.cfg.batch_size, shuffle=False, num_workers=self.cfg.workers, collate_fn=collate)
        model = self.core.model
        was = model.training
        scores = self.kind.evaluate(model, ((b[self.domain].to(self.device), b[2].to(self.device)) for b in loader), self.size)
        model.train(was)
        return scores

    def close(self) -> None:
        """Remove the hooks that capture the student's hint features (the network leaves clean)."""
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
