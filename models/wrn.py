"""Wide ResNets (Zagoruyko & Komodakis 2016) with RepDistiller's state_dict layout.

``conv1, block1..block3 (each .layer.<i>), bn1, fc``. The blocks are pre-activation blocks:
a block's output is not activated inside it; the BN-ReLU that follows it belongs to the next
block (``bn1``/``relu1``) or, after the last block, to the network head (``bn1``/``relu``).
That BN-ReLU pair is the sub-block's activation here: pre-activation = the BN output,
post-activation = the ReLU output. (RepDistiller's ``is_feat`` returns the raw block output
as its default feature; the paper defines hints by the ReLU, which is what this follows.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import conv3x3, init_weights


class WideBasic(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = conv3x3(out_planes, out_planes)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # The shortcut takes the raw input when shapes match, the activated one otherwise.
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float):
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(FeatureContract, nn.Module):
    """WRN-depth-widen for 32x32 inputs: (depth-4)/6 blocks per stage.

    Its blocks are pre-activation blocks: a block's output is the raw residual sum, and the next
    block's BN-ReLU (the final BN-ReLU after the last one) comes first in that block. Hint features
    follow RepDistiller, whose WRN returns the raw block outputs (``tap="block"``, the default: no
    separate pre-/post-activation). ``tap="next"`` takes the post-activation after the next block's
    BN-ReLU instead (pre = its input, the raw output again)."""

    classifier_name = "fc"

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, drop_rate: float = 0.0, tap: str = "block"):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth {depth} is not 6n+4")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        if tap not in ("block", "next"):
            raise ValueError(f"tap {tap!r}: 'block' (RepDistiller's raw block outputs) or 'next' (after the next BN-ReLU)")
        self.n, self.tap = n, tap
        self.conv1 = conv3x3(3, ch[0])
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        names = [f"block{s}.layer.{b}" for s in (1, 2, 3) for b in range(self.n)]
        taps = [f"{nxt}.relu1" for nxt in names[1:]] + ["relu"] if self.tap == "next" else [None] * len(names)
        return [PointSpec(name, i // self.n + 1, tap) for i, (name, tap) in enumerate(zip(names, taps, strict=True))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# name -> (depth, widen factor)
WRNS = {"wrn_10_2": (10, 2), "wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2), "wrn_28_2": (28, 2)}
