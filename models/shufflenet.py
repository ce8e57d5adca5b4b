"""RepDistiller's CIFAR ShuffleNets: ``ShuffleV1`` (Zhang et al. 2018, g=3) and ``ShuffleV2`` (Ma et al. 2018, 1x).

Both end every unit with one ReLU over the whole output, which is the pre/post-activation
tap. In ShuffleV2 the reference applies the ReLU to the transformed half before the concat and
shuffle; the untouched half is already non-negative (it is a previous unit's ReLU output), and
ReLU commutes with the channel shuffle, so ``relu(shuffle(cat(x1, y)))`` used here is the same
function and gives identical outputs, while exposing a whole-tensor pre-activation.
"""

from __future__ import annotations

import torch
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import channel_shuffle, conv3x3, init_weights


class ShuffleV1Unit(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = out_planes // 4
        g = 1 if in_planes == 24 else groups  # the first pointwise conv after the stem is not grouped
        self.g = g
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(self.relu(self.bn1(self.conv1(x))), self.g)
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return self.act(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleNetV1(FeatureContract, nn.Module):
    classifier_name = "linear"

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3, num_classes: int = 100):
        super().__init__()
        self.num_blocks = tuple(num_blocks)
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        in_planes = 24
        for s, (planes, n) in enumerate(zip(out_planes, num_blocks, strict=True), start=1):
            units = []
            for i in range(n):
                cat = in_planes if i == 0 else 0  # stride-2 units concatenate their input
                units.append(ShuffleV1Unit(in_planes, planes - cat, 2 if i == 0 else 1, groups))
                in_planes = planes
            self.add_module(f"layer{s}", nn.Sequential(*units))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_planes[-1], num_classes)
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"layer{s}.{b}", s, f"layer{s}.{b}.act") for s, n in enumerate(self.num_blocks, 1) for b in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


class ShuffleV2Unit(nn.Module):
    """Stride-1 unit: split channels in half, transform one half, concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = conv3x3(c, c, groups=c)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = self.relu(self.bn1(self.conv1(x2)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        return self.act(channel_shuffle(torch.cat([x1, out], 1), 2))


class ShuffleV2Down(nn.Module):
    """Stride-2 unit: two branches on the full input, concat, shuffle."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.conv1 = conv3x3(cin, cin, 2, groups=cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = conv3x3(mid, mid, 2, groups=mid)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        right = self.relu(self.bn3(self.conv3(x)))
        right = self.bn5(self.conv5(self.bn4(self.conv4(right))))
        return self.act(channel_shuffle(torch.cat([left, right], 1), 2))


class ShuffleNetV2(FeatureContract, nn.Module):
    classifier_name = "linear"

    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3), num_classes: int = 100):
        super().__init__()
        self.num_blocks = tuple(num_blocks)
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        cin = 24
        for s, (cout, n) in enumerate(zip(out_channels[:3], num_blocks, strict=True), start=1):
            self.add_module(f"layer{s}", nn.Sequential(ShuffleV2Down(cin, cout), *[ShuffleV2Unit(cout) for _ in range(n)]))
            cin = cout
        self.conv2 = nn.Conv2d(cin, out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        return [PointSpec(f"layer{s}.{b}", s, f"layer{s}.{b}.act") for s, n in enumerate(self.num_blocks, 1) for b in range(n + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))
