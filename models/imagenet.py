"""ImageNet classifiers with torchvision's state_dict layouts, written here (torchvision not needed).

ResNet-18/34/50 (``conv1, bn1, layer1..layer4, fc``; v1.5 bottlenecks, stride in the 3x3) and
MobileNetV2 (``features.0..18, classifier.1``). Candidates: the residual blocks (ResNet-34:
3+4+6+3 = 16) and the 17 inverted residuals (no final ReLU: pre = post = block output).
"""

from __future__ import annotations

import torch
from torch import nn

from .cifar_resnet import BasicBlock, Bottleneck, residual_stage
from .features import FeatureContract, PointSpec
from .layers import init_weights


class ImageNetResNet(FeatureContract, nn.Module):
    classifier_name = "fc"

    def __init__(self, block: type, layers: tuple[int, ...], num_classes: int = 1000):
        super().__init__()
        self.layers = tuple(layers)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for s, (planes, n) in enumerate(zip((64, 128, 256, 512), self.layers, strict=True), start=1):
            self.add_module(f"layer{s}", self._make_layer(block, planes, n, 1 if s == 1 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_weights(self)
        nn.init.kaiming_uniform_(self.fc.weight, a=5**0.5)  # torchvision keeps nn.Linear's default init

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layer, self.inplanes = residual_stage(block, self.inplanes, planes, blocks, stride)
        return layer

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"layer{s}.{b}", s, f"layer{s}.{b}.act") for s, n in enumerate(self.layers, 1) for b in range(n)]

    tail_names = ("layer4", "avgpool", "fc")  # last stage, pool, classifier: what ONE branches

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last stage (ONE's shared low-level layers)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.layer4(self.trunk(x))), 1))


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class TVInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(inp, hidden, 1))
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


MBV2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ImageNetMobileNetV2(FeatureContract, nn.Module):
    """torchvision ``mobilenet_v2`` (width 1.0); stages are the spatial resolutions 1/2 .. 1/32."""

    classifier_name = "classifier.1"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features: list[nn.Module] = [conv_bn_relu6(3, 32, 3, 2)]
        self.block_stages: list[int] = []
        cin, stage = 32, 1
        for t, c, n, s in MBV2_SETTING:
            for i in range(n):
                stride = s if i == 0 else 1
                stage += stride == 2
                features.append(TVInvertedResidual(cin, c, stride, t))
                self.block_stages.append(stage)
                cin = c
        features.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"features.{i}", stage) for i, stage in enumerate(self.block_stages, start=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


IMAGENET_RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)), "resnet50": (Bottleneck, (3, 4, 6, 3))}
