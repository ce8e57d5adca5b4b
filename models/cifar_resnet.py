"""CIFAR ResNets (He et al. 2016, §4.2) with RepDistiller's state_dict layout.

``conv1, bn1, layer1..layer3, fc``; resnet8x4/resnet32x4 are the 4x-wide variants of the
CRD benchmark. Candidates are the residual blocks, stages are ``layer1..layer3``.
"""

from __future__ import annotations

import torch
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import conv3x3, init_weights


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.act = nn.ReLU()  # the block's last ReLU: the pre/post-activation tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + identity)


def residual_stage(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks (the first strided, with a 1x1 conv-BN ``downsample`` when the
    shape changes), laid out as torchvision / RepDistiller name them; returns (stage, out channels)."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [block(inplanes, planes, stride, downsample)] + [block(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), out


class CifarResNet(FeatureContract, nn.Module):
    """ResNet of depth 6n+2 (basic blocks) or 9n+2 (bottlenecks) for 32x32 inputs.

    Args:
        depth: total depth (8, 14, 20, 32, 44, 56, 110, ...).
        num_filters: channels of the stem and the three stages.
        block: ``BasicBlock`` or ``Bottleneck``.
        num_classes: classifier outputs.
    """

    classifier_name = "fc"

    def __init__(self, depth: int, num_filters: list[int], block: type = BasicBlock, num_classes: int = 100):
        super().__init__()
        per = 6 if block is BasicBlock else 9
        if (depth - 2) % per:
            raise ValueError(f"depth {depth} is not {per}n+2 for {block.__name__}")
        n = (depth - 2) // per
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)
        self.blocks_per_stage = n
        init_weights(self)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layer, self.inplanes = residual_stage(block, self.inplanes, planes, blocks, stride)
        return layer

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"layer{s}.{b}", s, f"layer{s}.{b}.act") for s in (1, 2, 3) for b in range(self.blocks_per_stage)]

    tail_names = ("layer3", "avgpool", "fc")  # last stage, pool, classifier: what ONE branches

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last stage (ONE's shared low-level layers)."""
        return self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.layer3(self.trunk(x))), 1))


_THIN = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]

# name -> (depth, filters)
CIFAR_RESNETS = {
    "resnet8": (8, _THIN),
    "resnet14": (14, _THIN),
    "resnet20": (20, _THIN),
    "resnet26": (26, _THIN),
    "resnet32": (32, _THIN),
    "resnet44": (44, _THIN),
    "resnet56": (56, _THIN),
    "resnet110": (110, _THIN),
    "resnet8x4": (8, _WIDE),
    "resnet32x4": (32, _WIDE),
}
