"""What differs between detection and recognition: the model, the task loss and the score."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compressor.models import Registry, build_model, check_reference, family
from compressor.models.features import classifier_name

from ..detection import YOLOv3Loss, cxcywh_to_xyxy, decode, evaluate_detections, postprocess
from ..metrics import top1_hits
from .data import normalise


class DetectionTask:
    """YOLOv3 with its loss; scored by AP50 (and mAP@[.5:.95]) after NMS."""

    metric = "AP50"

    def check(self, arch: str) -> None:
        check_reference(arch)
        if family(arch) != "detection":
            raise ValueError(f"{arch} is not a zoo detector; detection needs a yolov3_* architecture (its loss reads the anchors)")

    def build(
        self, arch: str, num_classes: int, size: tuple[int, int], kwargs: dict | None = None, points: list[str] | None = None
    ) -> nn.Module:
        self.check(arch)
        return build_model(arch, num_classes, {**(kwargs or {}), "input_size": tuple(size)}, size, points, within="backbone")

    def criterion(self, model: nn.Module) -> nn.Module:
        return YOLOv3Loss(model.anchors, model.strides, model.num_classes)

    def loss(self, criterion: nn.Module, outputs, targets: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        return criterion(outputs, targets, size)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], size: tuple[int, int]) -> dict[str, float]:
        model.eval()
        h, w = size
        scale = torch.tensor([w, h, w, h])
        detections, truth = [], []
        for images, targets in batches:
            detections += postprocess(decode(model(normalise(images)), model.anchors, model.strides), conf_threshold=0.005)
            for i in range(len(images)):
                rows = targets[targets[:, 0] == i]
                truth.append(torch.cat([rows[:, 1:2], cxcywh_to_xyxy(rows[:, 2:6]) * scale], 1))
        scores = evaluate_detections(detections, truth)
        values = {"AP50": scores.ap50, "mAP50-95": scores.map50_95, "AP50 (COCO 101-pt)": scores.ap50_coco,
                  "mAP50-95 (COCO 101-pt)": scores.map50_95_coco}  # fmt: skip
        return {k: round(100 * v, 2) for k, v in values.items()}


class RecognitionTask:
    """A classifier (zoo or factory reference) with cross-entropy; scored by top-1 accuracy."""

    metric = "top1"

    def check(self, arch: str) -> None:
        check_reference(arch)
        if family(arch) == "detection":
            raise ValueError(f"{arch} is a detector; recognition needs a classifier such as resnet18")

    def build(
        self, arch: str, num_classes: int, size: tuple[int, int], kwargs: dict | None = None, points: list[str] | None = None
    ) -> nn.Module:
        self.check(arch)
        return build_model(arch, num_classes, kwargs, size, points)

    def criterion(self, model: nn.Module) -> nn.Module:
        return nn.CrossEntropyLoss()

    def loss(self, criterion: nn.Module, outputs, targets: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        ce = criterion(outputs, targets)
        return {"loss": ce, "ce": ce}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], size: tuple[int, int]) -> dict[str, float]:
        model.eval()
        correct = total = 0
        for images, targets in batches:
            correct += top1_hits(model(normalise(images)), targets)
            total += len(targets)
        return {"top1": round(100 * correct / max(total, 1), 2)}


TASKS: Registry = Registry("cross-distillation task")
TASKS.register("detection", DetectionTask())
TASKS.register("recognition", RecognitionTask())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the backbone learning-rate multiplier applies to: a detector's ``backbone``,
    or everything but the classifier of a recognition network."""
    if hasattr(model, "backbone"):
        return list(model.backbone.parameters())
    head = {id(p) for p in model.get_submodule(classifier_name(model)).parameters()}
    return [p for p in model.parameters() if id(p) not in head]
