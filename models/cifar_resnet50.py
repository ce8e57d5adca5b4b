"""RepDistiller's CIFAR ``ResNet18/34/50`` (``resnetv2.py``: a stride-1 3x3 stem, four stages of
basic blocks or bottlenecks with ``shortcut`` projections, and ``linear``)."""

from __future__ import annotations

import torch
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import conv3x3, init_weights


class ShortcutBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ShortcutBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.shortcut(x))


class CifarResNet50(FeatureContract, nn.Module):
    """Four stages on a stride-1 3x3 stem: bottlenecks [3, 4, 6, 3] (ResNet50, 16 candidates) by
    default, or ``block=ShortcutBasicBlock`` with [2, 2, 2, 2] (ResNet18) / [3, 4, 6, 3] (ResNet34)."""

    classifier_name = "linear"

    def __init__(self, num_blocks: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 100, block: type = ShortcutBottleneck):
        super().__init__()
        self.num_blocks = tuple(num_blocks)
        self.in_planes = 64
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        for s, (planes, n) in enumerate(zip((64, 128, 256, 512), self.num_blocks, strict=True), start=1):
            strides = [1 if s == 1 else 2] + [1] * (n - 1)
            layers = []
            for stride in strides:
                layers.append(block(self.in_planes, planes, stride))
                self.in_planes = planes * block.expansion
            self.add_module(f"layer{s}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"layer{s}.{b}", s, f"layer{s}.{b}.act") for s, n in enumerate(self.num_blocks, start=1) for b in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))
