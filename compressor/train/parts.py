"""Pieces both training loops use (the distillation engine and the online cohort loop): the device,
the data, the student, the optimiser and its schedule, evaluation, the resume fingerprint and the
student's sidecar."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compressor.models import ModelReferenceError, build_model, canonical_reference

from .. import __version__
from ..checkpoint import STUDENT_SCHEMA, load_checkpoint
from ..data import ImageDataset, open_dataset
from ..device import check_device
from ..distributed import World, all_reduce_sum
from ..errors import UserError
from ..metrics import topk_hits
from .config import DistillConfig, OptimConfig
from .data import eval_loader


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str, world: World) -> torch.device:
    device = check_device(name, "train.device")
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank if world.distributed else (device.index or 0))
        torch.cuda.set_device(device)
    return device


def datasets(config: DistillConfig) -> tuple[ImageDataset, ImageDataset]:
    """Train and eval sets, which must have the same classes (the teacher's are checked by the caller)."""
    train_set = open_dataset(config.data.train, "train")
    eval_set = open_dataset(config.data.eval or config.data.train, "test")
    if eval_set.info.num_classes != train_set.info.num_classes:
        raise UserError(f"data.eval ({eval_set.info.name}) has {eval_set.info.num_classes} classes but the training data has "
                        f"{train_set.info.num_classes}; give an evaluation set of the same classes")  # fmt: skip
    if config.data.augment:
        train_set.transform = train_set.augmentation()  # CIFAR's pad-4 crop, or the ImageNet protocol for image folders
    return train_set, eval_set


def points_at(attach: Callable[..., Any], model: nn.Module, input_size: tuple[int, int], patterns: list[str] | None) -> None:
    try:
        attach(model, input_size, patterns=patterns)
    except ValueError as e:
        raise UserError(f"{type(model).__name__}: {e}") from None


def build_student(config: DistillConfig, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    c = config.student
    if c.checkpoint:
        loaded = load_checkpoint(
            c.checkpoint, arch=c.arch, num_classes=num_classes, kwargs=c.kwargs, points=c.points, input_size=input_size
        )
        return loaded.model.train()
    try:
        return build_model(c.arch, num_classes, c.kwargs, input_size, c.points)
    except ModelReferenceError as e:
        raise UserError(f"student.arch: {e}") from None


def make_optimizer(config: DistillConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = config.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def learning_rate(config: DistillConfig, epoch: int) -> float:
    """lr of a (0-based) epoch; the initialisation stage runs at the base lr."""
    return config.optim.lr * schedule_factor(config.optim, epoch - config.train.init_epochs, config.train.epochs)


def schedule_factor(o: OptimConfig, epoch: int, epochs: int) -> float:
    """The factor on the base lr at 0-based ``epoch`` of ``epochs`` (a negative epoch: an
    initialisation stage, at the base lr): warm-up, then multistep, cosine or constant."""
    if epoch < 0:
        return 1.0
    if epoch < o.warmup_epochs:
        return (epoch + 1) / o.warmup_epochs
    if o.schedule == "multistep":
        return o.decay ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
    return 1.0


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageDataset, batch_size: int, workers: int, device: torch.device, world: World) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` on ``data`` (with fewer
    than 5 classes, ``top5`` is top-K, i.e. 100%)."""
    was = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # n, top1, topk, loss
    for batch in eval_loader(data, batch_size, workers, world):
        images, labels, _ = (x.to(device) for x in batch)
        logits = model(images).float()
        totals += torch.tensor([len(labels), *topk_hits(logits, labels, 5),
                                nn.functional.cross_entropy(logits, labels, reduction="sum").item()], dtype=torch.float64)  # fmt: skip
    model.train(was)
    n, top1, top5, loss = all_reduce_sum(totals, world).tolist()
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "loss": loss / n}


def state_fingerprint(config: DistillConfig) -> str:
    """What must not change between a run and its resumption (``FINGERPRINTED``)."""
    key = [config.student.arch, config.loss.model_dump_json(), config.hints.model_dump_json(), config.data.train, str(config.train.seed)]
    return hashlib.sha256("|".join(key).encode()).hexdigest()[:16]


FINGERPRINTED = ("student.arch", "loss", "hints", "data.train", "train.seed")


def fingerprint_changes(saved: dict[str, Any], config: DistillConfig) -> list[str]:
    """``["loss.method: ce -> at+kd", ...]``: the fingerprinted settings in which ``config`` differs from
    the resolved config a run saved (its ``config.yaml``), for the message that refuses a resume."""
    now = config.model_dump(mode="json")

    def leaves(tree: Any, prefix: str) -> dict[str, Any]:
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in leaves(sub, f"{prefix}.{key}").items()}
        return {prefix: tree}

    changes = []
    for key in FINGERPRINTED:
        was, is_ = saved, now
        for part in key.split("."):
            was = was.get(part) if isinstance(was, dict) else None
            is_ = is_.get(part) if isinstance(is_, dict) else None
        old, new = leaves(was, key), leaves(is_, key)
        changes += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    return changes


def student_sidecar(config: DistillConfig, info, made_by: dict[str, Any], metrics: dict[str, Any], arch: str | None = None) -> dict:
    """The JSON beside a saved student: what it is, how to feed it, how it was made."""
    return {
        "schema": STUDENT_SCHEMA,
        "version": 1,
        "arch": arch or canonical_reference(config.student.arch),
        "arch_kwargs": dict(config.student.kwargs),
        "points": config.student.points,
        "num_classes": info.num_classes,
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "class_names": list(info.class_names),
        "made_by": {"tool_version": __version__, "method": config.loss.method, "data": config.data.train, **made_by},
        "metrics": metrics,
    }


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's weights (to check that DDP ranks ended identical)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
