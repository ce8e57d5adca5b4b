"""RepDistiller's CIFAR MobileNetV2 (``mobile_half``: width 0.5, expansion 6).

``conv1, blocks.<stage>.<i>.conv.{0..7}, conv2, classifier.0``. Candidates are the 17 inverted
residuals. They end in a linear bottleneck (no ReLU), so pre- and post-activation features are
the same tensor, the block output. Stages are the spatial resolutions (blocks 0-1, 2, 3-4, 5-6
for 32x32 inputs), whose ends are the points RepDistiller returns as features.
"""

from __future__ import annotations

import torch
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import init_weights


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion t, channels c, repeats n, first stride s); t of the first group is always 1
_SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]


class CifarMobileNetV2(FeatureContract, nn.Module):
    classifier_name = "classifier.0"

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        cin = int(32 * width_mult)
        self.conv1 = _conv_bn(3, cin, 3, 2)
        self.blocks = nn.ModuleList()
        self.block_stages: list[int] = []
        stage = 1
        for g, (t, c, n, s) in enumerate(_SETTING):
            cout = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t or expansion))
                cin = cout
            if s == 2 and g > 0:
                stage += 1
            self.block_stages += [stage] * n
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(cin, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        names = [f"blocks.{g}.{i}" for g, seq in enumerate(self.blocks) for i in range(len(seq))]
        return [PointSpec(name, stage) for name, stage in zip(names, self.block_stages, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for seq in self.blocks:
            x = seq(x)
        x = self.conv2(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))
