"""What every distillation loss sees and how it is built.

A loss is a small ``nn.Module`` with ``forward(student_out, teacher_out) -> Tensor`` (STYLE.md).
Both arguments are ``Outputs``: logits, the features at the matched hint points (student
point i is paired with teacher point i), the penultimate embedding (the classifier's input),
and the batch's labels and dataset indices. Losses that need trainable adapters (regressors,
connectors, embeddings, memory banks) build them in ``build(ctx, **params)`` from the shapes
observed in one dry-run forward pass; the adapters live in the loss, never in the student, so
the saved student stays clean.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Outputs:
    logits: torch.Tensor  # (B, K)
    feats: list[torch.Tensor]  # [(B, C_i, H_i, W_i)] at the matched hint points
    embedding: torch.Tensor  # (B, D) penultimate features
    labels: torch.Tensor  # (B,)
    index: torch.Tensor  # (B,) dataset indices (CRD's memory bank)
    inputs: torch.Tensor | None = None  # the batch itself (BSS attacks it); set for the student's outputs


@dataclass(frozen=True)
class PrepareContext:
    """What ``DistillLoss.prepare`` sees before the optimiser and the loss exist: the networks (the
    engine's own modules), the training set, the hint points, the method's ``loss.params``."""

    teacher: nn.Module | None
    student: nn.Module
    dataset: Any  # the training ImageDataset
    teacher_points: list[int]
    student_points: list[int]
    params: dict[str, Any]
    device: torch.device
    epochs: int


@dataclass(frozen=True)
class LossContext:
    """Shapes seen in a dry run: per hint (C, H, W) for student and teacher, embedding widths."""

    student_feats: tuple[tuple[int, int, int], ...]
    teacher_feats: tuple[tuple[int, int, int], ...]
    student_embed: int
    teacher_embed: int
    num_classes: int
    num_data: int
    preact: bool = False  # hint features taken before the sub-block's last ReLU


class DistillLoss(nn.Module):
    """Base class. ``kind`` says what the loss reads and which weight of 001 eq. 8 applies:
    ``logit`` (alpha), ``feature`` (beta; the hint features, summed over hint pairs) or
    ``embedding`` (beta; the penultimate embeddings only, no hints needed), or ``online`` (DML,
    ONE: no teacher; the method trains a network of its own, see ``losses.online`` and ``train.cohorts``). ``default_weight``
    is the weight RepDistiller uses for the method, taken when the config gives none."""

    kind = "feature"
    default_weight = 1.0
    needs_init = False  # True: ``init_loss`` must run for ``init_epochs`` > 0 before distillation
    in_distillation = True  # False: the term trains in the initialisation stage only (its weight is 0 after it)
    reads_student_feats = True  # False: a feature method that reads only the teacher's hint features (EKD)
    state_file: str | None = None  # where the engine saves ``export_state()`` (with ``report``'s figures) beside the student

    # The hooks below are every optional step the engine runs for a method, in its order; the defaults do nothing.

    @staticmethod
    def default_hints(teacher: nn.Module, student: nn.Module, params: dict[str, Any]) -> tuple[list[int], list[int]] | None:
        """(teacher points, student points) this method places itself (letKD's penultimate layer), or
        None for the engine's rule (the plan's, else the stage ends). Raises ValueError on bad ``params``."""
        return None

    @classmethod
    def prepare(cls, ctx: PrepareContext) -> dict[str, Any]:
        """Work before the optimiser and the loss are built (fit on teacher features, attach layers to
        the student, keep references to the networks); returns extra keyword arguments of ``build``.
        Raises ValueError on bad ``ctx.params``."""
        return {}

    @classmethod
    def build(cls, ctx: LossContext, **params) -> DistillLoss:
        return cls(**params)

    def report(self, teacher_outputs: Iterable[Outputs]) -> dict[str, Any] | None:
        """Figures of the method's own parts on the eval set at the end of the run (EKD's heads), or
        None. ``teacher_outputs`` are the teacher's eval-set outputs, batch by batch, with ``inputs`` set."""
        return None

    def export_state(self) -> dict[str, Any]:
        """Tensors and numbers saved in ``state_file`` beside the student when ``report`` gave figures."""
        return {}

    def close(self) -> None:
        """The run is over (finished or not): remove what ``prepare`` attached to the engine's
        networks (forward hooks), so that the user's model objects leave as they came."""

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor | None:
        """Loss of an initialisation stage run before distillation proper (FitNet stage 1,
        FT's paraphraser, AB), or None when the method has none."""
        return None

    def ce_logits(self, s: Outputs, t: Outputs | None) -> torch.Tensor | None:
        """The logits the engine's cross-entropy should read instead of the student's raw ones (SKD's
        rescaled logits, as its authors' code does), or None."""
        return None

    @property
    def has_init_stage(self) -> bool:
        """Whether ``init_loss`` gives a loss, so that ``train.init_epochs`` > 0 has something to train."""
        return type(self).init_loss is not DistillLoss.init_loss

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (DKD's warm-up)."""


def match_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps down to the smaller's H x W (RepDistiller's rule)."""
    sh, th = s.shape[2], t.shape[2]
    if sh > th:
        s = F.adaptive_avg_pool2d(s, t.shape[2:])
    elif th > sh:
        t = F.adaptive_avg_pool2d(t, s.shape[2:])
    return s, t


def kl_soft(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch (Hinton et al. 2015)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature**2
