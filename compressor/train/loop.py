"""The one training loop. Every training in the library (distillation, online cohorts, cross
distillation, plain supervised training) is a ``Task`` run by ``fit``, and ``step`` is the one
place that calls ``backward()``.

Per epoch: the task sets its learning rate and schedules, yields its batches in a seeded order
(so ``--resume`` replays exactly), and the loop runs forward under autocast (bf16 on CPU, fp16 or
bf16 on CUDA, fp16 with loss scaling), stops with ``TrainingDiverged`` on a non-finite loss
before stepping (the last good checkpoint stays), backward, gradient clipping, step; then the
task evaluates, the main process writes ``checkpoints/last.pt`` and ``metrics.jsonl``
atomically (and TensorBoard when asked), and under torchrun the ranks sync buffers and wait for
each other. A task owns its modules (DDP-wrapped where it runs under torchrun), its optimiser,
its data and its metric; the loop owns the order of things.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..distributed import World, barrier, broadcast_buffers
from ..errors import UserError
from . import artifacts
from .parts import TrainingDiverged


class Task(ABC):
    """What the loop trains. ``module`` holds every trainable and saved tensor (its state_dict is
    the checkpoint), ``optimizer`` steps its parameters."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    metric: str = "top1"  # the key of ``evaluate``'s result that "best" follows

    @abstractmethod
    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Set the learning rate (and any schedule) of the 0-based ``epoch``; returns what the
        metrics row records about it (``lr``, ``stage``)."""

    @abstractmethod
    def batches(self, epoch: int) -> Iterable[Any]:
        """This epoch's batches, in an order that depends only on the seed and the epoch."""

    @abstractmethod
    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """Named loss terms of one batch; ``loss`` is the total that is minimised."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Scores on the evaluation data (``metric`` among them)."""

    def row(self) -> dict[str, Any]:
        """More of this epoch for its metrics row, after ``evaluate`` (an online cohort's members)."""
        return {}

    def batch_size(self, batch: Any) -> int:
        return len(batch[-1]) if isinstance(batch, list | tuple) else len(batch)

    def train(self) -> None:
        self.module.train()


@dataclass
class LoopSettings:
    out: Path
    epochs: int  # in all (an initialisation stage included)
    fingerprint: str  # what must not change between a run and its resumption
    device: torch.device
    world: World
    amp: str = "off"  # off | bf16 | fp16
    clip_grad: float | None = None
    tensorboard: bool = False
    progress: bool = True
    desc: str = "epoch"


class Precision:
    """Autocast and loss scaling of ``amp``: bf16 on CPU or CUDA, fp16 on CUDA with a GradScaler."""

    def __init__(self, amp: str, device: torch.device):
        if amp not in ("off", "bf16", "fp16"):
            raise UserError(f"train.amp {amp!r}: one of off, bf16, fp16")
        if amp == "fp16" and device.type != "cuda":
            raise UserError("train.amp: fp16 needs a CUDA device; use bf16 on CPU")
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()


def step(task: Task, batch: Any, precision: Precision, clip_grad: float | None, out: Path, where: str) -> dict[str, torch.Tensor]:
    """One optimisation step of ``task`` on ``batch``; returns the detached loss terms.

    Raises:
        TrainingDiverged: a non-finite loss, before any weight changed.
    """
    with precision.autocast():
        parts = task.loss(batch)
    loss = parts["loss"]
    if not torch.isfinite(loss.detach()).item():
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
        last = out / "checkpoints" / "last.pt"
        kept = f"The last good checkpoint is kept ({last}; --resume continues from it)" if last.exists() else "No epoch had finished"
        raise TrainingDiverged(f"the loss became {float(loss.detach())} at {where} ({shown}); stopped. {kept}. Lower optim.lr or "
                               "the weight of the diverging term")  # fmt: skip
    task.optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(loss).backward()
    if clip_grad:
        precision.scaler.unscale_(task.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_([p for g in task.optimizer.param_groups for p in g["params"]], clip_grad)
    precision.scaler.step(task.optimizer)
    precision.scaler.update()
    return {k: v.detach().float() for k, v in parts.items()}


def run_epoch(task: Task, epoch: int, precision: Precision, s: LoopSettings) -> dict[str, float]:
    """One epoch of steps; returns the mean of every loss term and the throughput."""
    task.train()
    sums: dict[str, torch.Tensor] = {}
    seen, start = 0, time.perf_counter()
    bar = tqdm(task.batches(epoch), desc=f"{s.desc} {epoch + 1}/{s.epochs}", leave=False,
               disable=None if s.progress and s.world.is_main else True)  # fmt: skip
    for i, batch in enumerate(bar):
        parts = step(task, batch, precision, s.clip_grad, s.out, where=f"{s.desc} {epoch + 1}, step {i + 1}")
        n = task.batch_size(batch)
        seen += n
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v * n
        if i % 10 == 0:
            bar.set_postfix(loss=f"{float(parts['loss']):.3f}")
    elapsed = time.perf_counter() - start
    return {**{k: float(v) / max(seen, 1) for k, v in sums.items()}, "images_per_s": seen * s.world.size / elapsed, "seconds": elapsed}


@dataclass
class Fitted:
    final: dict[str, float]  # the last evaluation
    best: float  # the best ``metric`` over the epochs
    rows: list[dict[str, Any]]  # metrics.jsonl


def fit(task: Task, s: LoopSettings, resume: bool = False) -> Fitted:
    """Train ``task`` for ``s.epochs`` epochs into ``s.out`` (resuming its last checkpoint when asked)."""
    precision = Precision(s.amp, s.device)
    start, best, rows = 0, float("-inf"), []
    if resume:
        state, rows = artifacts.resume_state(s.out, s.fingerprint)
        task.module.load_state_dict(state["trainee"])
        task.optimizer.load_state_dict(state["optimizer"])
        precision.scaler.load_state_dict(state.get("scaler", {}))
        start, best = int(state["epoch"]), float(state.get("best", state.get("best_top1", float("-inf"))))
        if start >= s.epochs and rows:
            return Fitted(rows[-1]["eval"], best, rows)
    writer = _tensorboard(s.out, s.tensorboard and s.world.is_main)
    final = task.evaluate() if start >= s.epochs else {}  # killed after the last checkpoint: only the evaluation is left
    for epoch in range(start, s.epochs):
        about = task.start_epoch(epoch)
        train_stats = run_epoch(task, epoch, precision, s)
        broadcast_buffers(task.module, s.world)
        final = task.evaluate()
        best = max(best, final[task.metric])
        row = {"epoch": epoch + 1, **about, "train": train_stats, "eval": final, **task.row()}
        rows.append(row)
        if s.world.is_main:
            state = {"epoch": epoch + 1, "best": best, "fingerprint": s.fingerprint, "trainee": task.module.state_dict(),
                     "optimizer": task.optimizer.state_dict(), "scaler": precision.scaler.state_dict()}  # fmt: skip
            artifacts.save_state(s.out / "checkpoints" / "last.pt", state)
            artifacts.rewrite_metrics(s.out / "metrics.jsonl", rows)
            _log(writer, row)
            if s.progress:
                stage = f" [{about['stage']}]" if "stage" in about else ""
                print(f"{s.desc} {epoch + 1}/{s.epochs}{stage} loss {train_stats['loss']:.4f} {task.metric} {final[task.metric]:.2f} "
                      f"({train_stats['images_per_s']:.0f} img/s)", flush=True)  # fmt: skip
        barrier(s.world)
    if writer is not None:
        writer.close()
    return Fitted(final, best, rows)


def _tensorboard(out: Path, wanted: bool):
    if not wanted:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.jsonl always has everything
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _log(writer, row: dict[str, Any]) -> None:
    if writer is None:
        return
    for group in ("train", "eval"):
        for k, v in row[group].items():
            if isinstance(v, int | float):
                writer.add_scalar(f"{group}/{k}", v, row["epoch"])
    if "lr" in row:
        writer.add_scalar("lr", row["lr"], row["epoch"])
