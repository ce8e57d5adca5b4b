"""Online distillation runs (DML, ONE): a cohort network trained from scratch, no teacher.

The same config, data, optimiser, schedule, checkpoints, ``--resume``, metrics and artifacts
as ``distill``; what differs is the network (the method builds it around the student) and the
loss (the method's ``network_loss``). Every member (each DML peer; each ONE branch and the
gated ensemble) is evaluated each epoch. The student saved is peer 1 / branch 1 with the
shared layers, a plain zoo model; DML's other peers are saved beside it. One process only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from compressor.models import build_model

from ..config import save_config
from ..errors import UserError
from ..losses import LOSSES
from . import artifacts
from .config import DistillConfig
from .data import train_loader
from .distributed import init_world, shutdown
from .parts import (
    TrainingDiverged,
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


def _train(config: DistillConfig, method: str, world, resume: bool, progress: bool) -> dict[str, Any]:
    c, t = config, config.train
    device = resolve_device(t.device, world)
    torch.manual_seed(t.seed)
    notes = [f"{method} trains without a teacher: teacher.checkpoint is not used"] if c.teacher is not None else []
    if t.init_epochs:
        raise UserError(f"{method} has no initialisation stage: set train.init_epochs to 0")
    train_set, eval_set = datasets(c, None)
    n = train_set.info.num_classes
    try:
        loss = LOSSES.get(method)(**c.loss.params.get(method, {}))
        size = train_set.info.input_size
        student = build_student(c, n, size)
        net = loss.build_network(student, lambda arch: build_model(arch or c.student.arch, n, None if arch else c.student.kwargs, size))
    except (TypeError, ValueError) as e:
        raise UserError(f"loss.params.{method}: {e}") from None
    if hasattr(net, "build_gate"):
        net.build_gate(torch.stack([eval_set[i][0] for i in range(2)]))
    net = net.to(device)
    optimizer = make_optimizer(c, [p for p in net.parameters() if p.requires_grad])
    out = Path(c.out)
    ckpt, metrics_path = out / "checkpoints" / "last.pt", out / "metrics.jsonl"
    fingerprint = state_fingerprint(c)
    start, best, rows = 0, -1.0, []
    if resume:
        state, rows = artifacts.resume_state(out, fingerprint)
        net.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        start, best = int(state["epoch"]), float(state["best_top1"])
    out.mkdir(parents=True, exist_ok=True)
    save_config(c, out / "config.yaml")
    scores: dict[str, dict[str, float]] = {}
    for epoch in range(start, t.epochs):
        lr = learning_rate(c, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss.set_epoch(epoch)  # ONE's ramp of the KL term
        stats = _epoch(net, loss, optimizer, train_loader(train_set, c.data.batch_size, c.data.workers, t.seed, epoch, world),
                       device, f"epoch {epoch + 1}/{t.epochs}", progress)  # fmt: skip
        scores = {name: evaluate(m, eval_set, c.data.eval_batch_size, c.data.workers, device, world) for name, m in net.members().items()}
        first = next(iter(scores))
        best = max(best, scores[first]["top1"])
        rows.append({"epoch": epoch + 1, "stage": method, "lr": lr, "train": stats, "eval": scores[first], "members": scores})
        artifacts.save_state(ckpt, {"epoch": epoch + 1, "best_top1": best, "fingerprint": fingerprint,
                                    "network": net.state_dict(), "optimizer": optimizer.state_dict()})  # fmt: skip
        artifacts.rewrite_metrics(metrics_path, rows)
        if progress:
            shown = ", ".join(f"{k} {v['top1']:.2f}%" for k, v in scores.items())
            print(f"epoch {epoch + 1}/{t.epochs} loss {stats['loss']:.4f} top1: {shown}", flush=True)
    first = next(iter(net.members()))
    final = scores.get(first) or rows[-1]["eval"]
    made_by = {"teacher_arch": None, "epochs": t.epochs, "online": {"method": method, "members": rows[-1]["members"]}}
    sidecar_meta = student_sidecar(c, train_set.info, made_by, {"final": final, "best_top1": best})
    weights, sidecar = artifacts.save_student(out, student, sidecar_meta, name=c.name)
    summary = {"final": final, "best_top1": best, "epochs": t.epochs, "members": rows[-1]["members"], "notes": notes,
               "ranks_identical": True, "weights": str(weights), "sidecar": str(sidecar), "metrics": str(metrics_path)}  # fmt: skip
    for name, peer in net.members().items():  # DML: the other peers are students too
        if name != first and isinstance(peer, nn.Module) and hasattr(peer, "hint_points"):
            arch = getattr(peer, "arch", c.student.arch)
            artifacts.save_student(out, peer, student_sidecar(c, train_set.info, {**made_by, "peer": name}, {"final": scores[name]}, arch),
                                   name=f"{c.name}_{name}")  # fmt: skip
    return summary


def _epoch(net: nn.Module, loss, optimizer, loader, device, desc: str, progress: bool) -> dict[str, float]:
    net.train()
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    for step, (images, labels, _) in enumerate(tqdm(loader, desc=desc, leave=False, disable=None if progress else True)):
        images, labels = images.to(device), labels.to(device)
        parts = loss.network_loss(net(images), labels)
        if not torch.isfinite(parts["loss"].detach()):
            raise TrainingDiverged(f"the loss became {float(parts['loss'])} at {desc}, step {step + 1}; lower optim.lr")
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        seen += len(labels)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(labels)
    elapsed = time.perf_counter() - start
    return {**{k: v / max(seen, 1) for k, v in sums.items()}, "images_per_s": seen / elapsed, "seconds": elapsed}
