"""The model registry: ``create_model(name, num_classes=...)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from .cifar_mobilenetv2 import CifarMobileNetV2
from .cifar_resnet import CIFAR_RESNETS, CifarResNet
from .cifar_resnet50 import CifarResNet50
from .imagenet import IMAGENET_RESNETS, ImageNetMobileNetV2, ImageNetResNet
from .registry import Registry
from .shufflenet import ShuffleNetV1, ShuffleNetV2
from .vgg import VGG, VGG_CONFIGS
from .wrn import WRNS, WideResNet


@dataclass(frozen=True)
class ModelEntry:
    """How to build one architecture and what it expects.

    Attributes:
        build: ``build(num_classes=...) -> nn.Module`` with the feature contract.
        family: ``cifar`` (RepDistiller layout) or ``imagenet`` (torchvision layout).
        num_classes: default class count (CIFAR-100 / ImageNet-1k).
        input_size: default (H, W).
    """

    build: Callable[..., nn.Module]
    family: str
    num_classes: int
    input_size: tuple[int, int]


MODELS: Registry[ModelEntry] = Registry("model")


def _cifar(build: Callable[..., nn.Module]) -> ModelEntry:
    return ModelEntry(build, "cifar", 100, (32, 32))


def _imagenet(build: Callable[..., nn.Module]) -> ModelEntry:
    return ModelEntry(build, "imagenet", 1000, (224, 224))


for _name, (_depth, _filters) in CIFAR_RESNETS.items():
    MODELS.register(_name, _cifar(partial(CifarResNet, _depth, _filters)))
MODELS.register("ResNet50", _cifar(CifarResNet50))
for _name, (_depth, _widen) in WRNS.items():
    MODELS.register(_name, _cifar(partial(WideResNet, _depth, _widen)))
for _name, _cfg in VGG_CONFIGS.items():
    MODELS.register(_name, _cifar(partial(VGG, _cfg)))
MODELS.register("MobileNetV2", _cifar(CifarMobileNetV2))
MODELS.register("ShuffleV1", _cifar(ShuffleNetV1))
MODELS.register("ShuffleV2", _cifar(ShuffleNetV2))
for _name, (_block, _layers) in IMAGENET_RESNETS.items():
    MODELS.register(_name, _imagenet(partial(ImageNetResNet, _block, _layers)))
MODELS.register("mobilenet_v2", _imagenet(ImageNetMobileNetV2))


def create_model(name: str, num_classes: int | None = None) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: a name from ``list_models()`` (RepDistiller's spelling for the CIFAR family).
        num_classes: classifier outputs; the family's default (100 or 1000) when None.

    Raises:
        UnknownNameError: the name is not registered (the message lists the known ones).
        ValueError: ``num_classes`` < 1.
    """
    entry = MODELS.get(name)
    n = entry.num_classes if num_classes is None else int(num_classes)
    if n < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = entry.build(num_classes=n)
    model.arch = name  # lets later stages write the architecture into sidecars
    return model


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally only one family (``cifar`` or ``imagenet``)."""
    return [n for n in MODELS if family is None or MODELS.get(n).family == family]


def model_entry(name: str) -> ModelEntry:
    return MODELS.get(name)
