"""Online distillation runs (DML, ONE): a cohort network trained from scratch, no teacher.

The same config, data, optimiser, schedule, checkpoints, ``--resume``, metrics and artifacts
as ``distill``; what differs is the network (the method builds it around the student) and the
loss (the method's ``network_loss``). Every member (each DML peer; each ONE branch and the
gated ensemble) is evaluated each epoch. The student saved is peer 1 / branch 1 with the
shared layers, a plain zoo model; DML's other peers are saved beside it. One process only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models import build_model

from ..config import save_config
from ..distributed import init_world, shutdown
from ..errors import UserError
from ..losses import LOSSES
from . import artifacts
from .cohorts import build_cohort
from .config import DistillConfig
from .data import train_loader
from .loop import LoopSettings, Task, fit
from .parts import (
    build_student,
    datasets,
    evaluate,
    learning_rate,
    make_optimizer,
    resolve_device,
    state_fingerprint,
    student_sidecar,
)


def train_online(config: DistillConfig, method: str, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train the cohort of ``method`` (``dml`` or ``one``); returns the summary like ``distill``."""
    world = init_world(use_cuda=config.train.device.startswith("cuda"))
    try:
        if world.distributed:
            raise UserError(f"{method} runs in a single process; start it without torchrun")
        return _train(config, method, world, resume, progress)
    finally:
        shutdown(world)


class CohortTask(Task):
    """The cohort network of an online method as a task of the loop: the method's ``network_loss``
    on every member's logits; each member is evaluated, the first one's top-1 is the run's."""

    def __init__(self, config: DistillConfig, method: str, loss, net: nn.Module, optimizer, train_set, eval_set, device, world):
        self.c, self.method, self.loss_term, self.module, self.optimizer = config, method, loss, net, optimizer
        self.train_set, self.eval_set, self.device, self.world = train_set, eval_set, device, world
        self.members: dict[str, dict[str, float]] = {}

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        lr = learning_rate(self.c, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.loss_term.set_epoch(epoch)  # ONE's ramp of the KL term
        return {"stage": self.method, "lr": lr}

    def batches(self, epoch: int):
        c = self.c
        for images, labels, _ in train_loader(self.train_set, c.data.batch_size, c.data.workers, c.train.seed, epoch, self.world):
            yield images.to(self.device), labels.to(self.device)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return self.loss_term.network_loss(self.module(images), labels)

    def evaluate(self) -> dict[str, float]:
        c = self.c
        self.members = {name: evaluate(m, self.eval_set, c.data.eval_batch_size, c.data.workers, self.device, self.world)
                        for name, m in self.module.members().items()}  # fmt: skip
        return next(iter(self.members.values()))

    def row(self) -> dict[str, Any]:
        return {"members": self.members}


def _train(config: DistillConfig, method: str, world, resume: bool, progress: bool) -> dict[str, Any]:
    c, t = config, config.train
    device = resolve_device(t.device, world)
    torch.manual_seed(t.seed)
    notes = [f"{method} trains without a teacher: teacher.checkpoint is not used"] if c.teacher is not None else []
    if t.init_epochs:
        raise UserError(f"{method} has no initialisation stage: set train.init_epochs to 0")
    train_set, eval_set = datasets(c)
    n = train_set.info.num_classes
    try:
        loss = LOSSES.get(method)(**c.loss.params.get(method, {}))
        size = train_set.info.input_size
        student = build_student(c, n, size)
        make = lambda arch: build_model(arch or c.student.arch, n, None if arch else c.student.kwargs, size)  # noqa: E731
        net = build_cohort(loss, student, make, torch.stack([eval_set[i][0] for i in range(2)]))
    except (TypeError, ValueError) as e:
        raise UserError(f"loss.params.{method}: {e}") from None
    net = net.to(device)
    optimizer = make_optimizer(c, [p for p in net.parameters() if p.requires_grad])
    out = Path(c.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(c, out / "config.yaml")
    task = CohortTask(c, method, loss, net, optimizer, train_set, eval_set, device, world)
    settings = LoopSettings(out, t.epochs, state_fingerprint(c), device, world, t.amp, c.optim.clip_grad, t.tensorboard, progress)
    fitted = fit(task, settings, resume)
    members, final = fitted.rows[-1]["members"], fitted.final
    made_by = {"teacher_arch": None, "epochs": t.epochs, "online": {"method": method, "members": members}}
    sidecar_meta = student_sidecar(c, train_set.info, made_by, {"final": final, "best_top1": fitted.best})
    weights, sidecar = artifacts.save_student(out, student, sidecar_meta, name=c.name)
    summary = {"final": final, "best_top1": fitted.best, "epochs": t.epochs, "members": members, "notes": notes, "ranks_identical": True,
               "weights": str(weights), "sidecar": str(sidecar), "metrics": str(out / "metrics.jsonl")}  # fmt: skip
    first = next(iter(net.members()))
    for name, peer in net.members().items():  # DML: the other peers are students too
        if name != first and isinstance(peer, nn.Module) and hasattr(peer, "hint_points"):
            arch = getattr(peer, "arch", c.student.arch)
            artifacts.save_student(out, peer, student_sidecar(c, train_set.info, {**made_by, "peer": name}, {"final": members[name]}, arch),
                                   name=f"{c.name}_{name}")  # fmt: skip
    return summary
