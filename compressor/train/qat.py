"""Quantization-aware distillation (``quant.qat: true``): the student is fine-tuned through the very
Q/DQ graph it is deployed as, while the fp32 teacher supervises through the run's losses.

1. A float student: ``student.checkpoint`` (a trained one), a model object from the API, or else an
   ordinary distillation of ``train.epochs`` into ``OUT/float/`` (resumable like any run).
2. It is exported to ONNX (BatchNorm folded into the convolutions, as deployed), calibrated once on
   ``quant.calibration`` training images and quantized for ``quant.target`` (``cpu``: uint8
   asymmetric activations and per-channel int8 weights for ONNX Runtime; ``tensorrt``: int8
   symmetric), exactly as ``compressor export --int8`` does.
3. That graph becomes the student (``QdqGraph``: fake quantization with LSQ-learned activation
   steps, per-channel weight steps max|w|/127) and trains for ``quant.epochs`` with AdamW at
   ``quant.lr`` (cosine; ``qat_config`` says why not the float run's optimiser) on the one loop:
   checkpoints, ``--resume`` after a kill, metrics, hints at the float model's points. A method's
   own trainable parts (FitNets' regressors, CRD's embeddings) start anew: a student checkpoint
   does not hold them (cross distillation, one run, continues with its trained domain adaptors).
4. ``OUT/export/<name>.int8.onnx`` is written from the learned weights and steps (no recalibration),
   beside ``OUT/export/<name>.onnx`` (the float student), with the ONNX Runtime top-1 of both on held-out images and
   a parity check of the PyTorch graph against ONNX Runtime's integer kernels.

This follows the QAT recipe of Jacob et al. (CVPR 2018: BatchNorm folded, fine-tuning a trained
float model) with LSQ's learned steps (Esser et al., ICLR 2020) and distillation as the training
signal, as in NVIDIA Model Optimizer's quantization-aware distillation; it departs from both in that
folded BatchNorm statistics stay frozen for the whole fine-tuning (they are constants of the
deployed graph).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from compressor.models import hint_points
from compressor.models.features import classifier_name
from compressor.models.yolo import YOLOv3

from ..errors import UserError
from ..losses import online_method, parse_method
from .config import DistillConfig, OptimConfig, QuantConfig

OptimT = TypeVar("OptimT", bound=OptimConfig)

# methods that change the student's own layers or train networks of their own: QAT fine-tunes one fixed graph
_CANNOT = {
    "letkd": "attaches layers to the student (its KD layers)",
    "dml": "trains a cohort of its own",
    "one": "trains a cohort of its own",
}


def check_qat(config: DistillConfig) -> None:
    """Refuse, before anything is written, what quantization-aware distillation cannot run."""
    try:
        names = parse_method(config.loss.method)
        online_method(config.loss.method)
    except ValueError as e:
        raise UserError(f"loss.method: {e}") from None
    for name in names:
        if name in _CANNOT:
            raise UserError(f"quant.qat: {name} {_CANNOT[name]}, but quantization-aware training fine-tunes the one exported graph "
                            "of the student; use a method without student-side layers (kd, at+kd, dkd, crd+kd, ...)")  # fmt: skip
    if config.loss.params.get("averager", {}).get("exits"):
        raise UserError("quant.qat: averager with exits trains extra heads on the student; set loss.params.averager.exits: false")
    if config.train.amp != "off":
        raise UserError(f"quant.qat: fake quantization needs fp32 (train.amp is {config.train.amp}); set train.amp: off")


def qat_config(config: DistillConfig) -> DistillConfig:
    """The fine-tuning run: ``quant.epochs`` of AdamW at ``quant.lr`` (cosine, no warm-up, no weight decay)
    from the float student, its artifacts named ``<name>.qat``.

    AdamW rather than the float run's optimiser: BatchNorm is folded into the weights, which scales
    each output channel's effective SGD step by (gamma / sigma)^2, orders of magnitude apart between
    layers; SGD at a tenth of the float lr diverged within 5 steps here (resnet8, KD + CE), while
    Adam's per-parameter normalisation trains stably at 1e-4."""
    q = config.quant
    optim = qat_optim(config.optim, q)
    train = config.train.model_copy(update={"epochs": q.epochs, "init_epochs": 0})
    student = config.student.model_copy(update={"points": None})  # the graph carries the float student's points
    return config.model_copy(update={"optim": optim, "train": train, "student": student, "name": f"{config.name}.qat"})


def qat_optim(optim: OptimT, quant: QuantConfig) -> OptimT:
    """The optimiser section of the fine-tuning (``qat_config`` says why AdamW)."""
    return optim.model_copy(update={"name": "adamw", "lr": quant.lr, "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 0})


def qat_student(float_model: nn.Module, calibration: torch.Tensor, target: str):
    """The float student exported, calibrated and quantized for ``target``, as a trainable ``QdqGraph``.

    A YOLOv3 detector is exported as deployed, with its box decoding (which stays float); the graph
    returns the raw maps of its output convolutions and carries the anchors and strides, so the
    YOLO loss and the evaluation's decoding read it as they read the float detector."""
    from compressor.deploy.export.detection import DetectorExport
    from compressor.deploy.export.int8 import quantize_qdq
    from compressor.deploy.export.onnx_export import torch_to_onnx
    from compressor.deploy.export.qdq_graph import QdqGraph

    was = float_model.training
    float_model.eval()
    detector = isinstance(float_model, YOLOv3)
    prefix = "model." if detector else ""  # DetectorExport holds the detector as .model
    points = [(prefix + p.name, p.stage, p.tap is not None) for p in hint_points(float_model)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, qdq = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        device = next(float_model.parameters()).device
        model = DetectorExport(float_model.cpu(), with_nms=False) if detector else float_model.cpu()
        torch_to_onnx(model, calibration[:1], fp32, 17, True, dynamo=False, outputs=model.output_names if detector else ("logits",))
        float_model.to(device)
        quantize_qdq(fp32, qdq, (b.numpy() for b in calibration.split(32)), target=target)
        if detector:
            graph = QdqGraph.from_files(fp32, qdq, points, outputs=[prefix + name for name in float_model.output_modules()])
            graph.register_buffer("anchors", float_model.anchors.detach().cpu().clone())  # what the YOLO loss and decoding read
            graph.strides, graph.num_classes = float_model.strides, float_model.num_classes
        else:
            graph = QdqGraph.from_files(fp32, qdq, points, classifier_name(float_model))
    float_model.train(was)
    return graph


def calibration_images(config: DistillConfig) -> torch.Tensor:
    """``quant.calibration`` seeded training images, without augmentation (what export calibrates on)."""
    from compressor.deploy.export import calibration_batches

    batches = calibration_batches(config.data.train, config.quant.calibration)
    return torch.from_numpy(np.concatenate(list(batches)))


def qat_about(method: str, quant: QuantConfig, float_student: str | None = None) -> dict[str, Any]:
    """How the INT8 model was trained, for its sidecar."""
    return {"method": method, "epochs": quant.epochs, "lr": quant.lr, "calibration_images": quant.calibration,
            "float_student": float_student, "activation_steps": "learned (LSQ)", "weight_steps": "max|w|/127 per channel"}  # fmt: skip
