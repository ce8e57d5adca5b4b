"""The model registry: ``create_model(name, num_classes=...)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .cifar_mobilenetv2 import CifarMobileNetV2
from .cifar_resnet import CIFAR_RESNETS, CifarResNet
from .cifar_resnet50 import CifarResNet50, ShortcutBasicBlock
from .imagenet import IMAGENET_RESNETS, ImageNetMobileNetV2, ImageNetResNet
from .letkd import attach_kd_layers
from .registry import Registry
from .shufflenet import ShuffleNetV1, ShuffleNetV2
from .vgg import VGG, VGG_CONFIGS
from .wrn import WRNS, WideResNet
from .yolo import YOLOv3, classes_from_head


@dataclass(frozen=True)
class ModelEntry:
    """How to build one architecture and what it expects.

    Attributes:
        build: ``build(num_classes=...) -> nn.Module`` with the feature contract.
        family: ``cifar`` (RepDistiller layout), ``imagenet`` (torchvision layout) or
            ``detection`` (YOLOv3; forward returns raw maps, not logits).
        num_classes: default class count (CIFAR-100 / ImageNet-1k / COCO).
        input_size: default (H, W).
        classes_from_weight: class count from the weight of ``model.classifier_name``.
    """

    build: Callable[..., nn.Module]
    family: str
    num_classes: int
    input_size: tuple[int, int]
    classes_from_weight: Callable[[torch.Tensor], int] = lambda w: int(w.shape[0])

    @property
    def is_classifier(self) -> bool:
        return self.family != "detection"


MODELS: Registry[ModelEntry] = Registry("model")


def _cifar(build: Callable[..., nn.Module]) -> ModelEntry:
    return ModelEntry(build, "cifar", 100, (32, 32))


def _imagenet(build: Callable[..., nn.Module]) -> ModelEntry:
    return ModelEntry(build, "imagenet", 1000, (224, 224))


for _name, (_depth, _filters) in CIFAR_RESNETS.items():
    MODELS.register(_name, _cifar(partial(CifarResNet, _depth, _filters)))
MODELS.register("ResNet18", _cifar(partial(CifarResNet50, (2, 2, 2, 2), block=ShortcutBasicBlock)))  # EKD's (002 ch. 4) CIFAR ResNet-18/34
MODELS.register("ResNet34", _cifar(partial(CifarResNet50, (3, 4, 6, 3), block=ShortcutBasicBlock)))
MODELS.register("ResNet50", _cifar(CifarResNet50))
for _name, (_depth, _widen) in WRNS.items():
    MODELS.register(_name, _cifar(partial(WideResNet, _depth, _widen)))
for _name, _cfg in VGG_CONFIGS.items():
    MODELS.register(_name, _cifar(partial(VGG, _cfg)))
MODELS.register("MobileNetV2", _cifar(CifarMobileNetV2))  # RepDistiller's mobile_half (width 0.5)
MODELS.register("MobileNetV2_1_0", _cifar(partial(CifarMobileNetV2, width_mult=1.0)))  # full width
MODELS.register("ShuffleV1", _cifar(ShuffleNetV1))
MODELS.register("ShuffleV2", _cifar(ShuffleNetV2))
for _name, (_block, _layers) in IMAGENET_RESNETS.items():
    MODELS.register(_name, _imagenet(partial(ImageNetResNet, _block, _layers)))
MODELS.register("mobilenet_v2", _imagenet(ImageNetMobileNetV2))
# YOLOv3 as published, and CPU-sized ("_s") versions for demos and tests: a quarter of the width, fewer units.
for _name, _kwargs in {
    "yolov3_darknet53": {"backbone": "darknet53"},
    "yolov3_mobilenetv2": {"backbone": "mobilenetv2"},
    "yolov3_darknet53_s": {"backbone": "darknet53", "width": 0.25, "depth": (1, 1, 2, 2, 1)},
    "yolov3_mobilenetv2_s": {"backbone": "mobilenetv2", "width": 0.25, "depth": (1, 1, 2, 2, 1, 1, 1)},
}.items():  # fmt: skip
    MODELS.register(_name, ModelEntry(partial(YOLOv3, **_kwargs), "detection", 80, (416, 416), classes_from_head))


def create_model(name: str, num_classes: int | None = None, **options) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: a name from ``list_models()`` (RepDistiller's spelling for the CIFAR family).
        num_classes: classifier outputs; the family's default (100, 1000 or 80) when None.
        options: passed to the model's constructor (e.g. a detector's ``input_size``, ``anchors``),
            except ``letkd`` (a spec from ``model.model_options``): letKD layers to attach.

    Raises:
        UnknownNameError: the name is not registered (the message lists the known ones).
        ValueError: ``num_classes`` < 1.
    """
    entry = MODELS.get(name)
    n = entry.num_classes if num_classes is None else int(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    letkd = options.pop("letkd", None)
    model = entry.build(num_classes=n, **options)
    if letkd is not None:
        attach_kd_layers(model, **letkd)
    model.arch = name  # lets later stages write the architecture into sidecars
    return model


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally only one family (``cifar``, ``imagenet``, ``detection``)."""
    return [n for n in MODELS if family is None or MODELS.get(n).family == family]


def list_classifiers() -> list[str]:
    return [n for n in MODELS if MODELS.get(n).is_classifier]


def model_entry(name: str) -> ModelEntry:
    return MODELS.get(name)
