"""YOLOv3 (Redmon & Farhadi 2018) with DarkNet-53 or MobileNetV2 backbones, written here.

The network is three separate parts, as the cross-distillation scheme needs (000 ch. 5):
``backbone`` (features at strides 8, 16, 32), ``neck`` (YOLOv3's FPN: five-conv sets,
1x1 lateral + 2x upsample + concat) and ``head`` (per scale a 3x3 conv and a 1x1 conv to
A * (5 + classes) channels). ``forward`` returns the three raw maps (B, A*(5+C), H, W), fine
for ONNX; decoding, the loss and NMS live in ``compressor.detection``. Anchors (pixels of the
input, 3 per scale, small to large) are a buffer, so they travel with the weights.

The backbone provides the zoo's feature contract (hint points = its residual / inverted
residual blocks, stages = strides 2..32), so ``select-hints`` clusters a detector's backbone
exactly as it clusters a classifier. ``width`` and ``depth`` scale the backbone for CPU-sized
experiments (the ``_s`` zoo entries); the defaults are the papers' networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureContract, PointSpec
from .imagenet import MBV2_SETTING, TVInvertedResidual, conv_bn_relu6
from .layers import init_weights

# YOLOv3's COCO anchors (w, h) for a 416x416 input, small to large; scaled to the input size.
COCO_ANCHORS_416 = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
STRIDES = (8, 16, 32)


def conv_bn_leaky(cin: int, cout: int, kernel: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1))


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class DarkResidual(nn.Module):
    """DarkNet residual unit: x + conv3x3(conv1x1(x)), both conv-BN-LeakyReLU(0.1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = conv_bn_leaky(channels, channels // 2, 1)
        self.conv2 = conv_bn_leaky(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class DarkNet53(nn.Module):
    """DarkNet-53 without its classifier: a 3x3 stem, then five stages of a stride-2 3x3 conv
    followed by (1, 2, 8, 8, 4) residual units with 64..1024 channels."""

    def __init__(self, width: float = 1.0, depth: Sequence[int] = (1, 2, 8, 8, 4)):
        super().__init__()
        widths = [_scaled(c, width) for c in (32, 64, 128, 256, 512, 1024)]
        self.stem = conv_bn_leaky(3, widths[0], 3)
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_leaky(cin, cout, 3, 2), *(DarkResidual(cout) for _ in range(n)))
            for cin, cout, n in zip(widths[:-1], widths[1:], depth, strict=True)
        )
        self.out_channels = tuple(widths[3:])

    def point_specs(self, prefix: str) -> list[PointSpec]:
        return [PointSpec(f"{prefix}stages.{s}.{i}", s + 1) for s, stage in enumerate(self.stages) for i in range(1, len(stage))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[2:]  # strides 8, 16, 32


class MobileNetV2Backbone(nn.Module):
    """torchvision MobileNetV2's inverted residuals (width-scalable) without the last 1x1 conv
    and classifier; outputs after the stride-8 (32 ch), stride-16 (96 ch) and stride-32
    (320 ch) stages, as in common YOLOv3-MobileNetV2 detectors."""

    def __init__(self, width: float = 1.0, depth: Sequence[int] | None = None):
        super().__init__()
        setting = [(t, c, n if depth is None else depth[i], s) for i, (t, c, n, s) in enumerate(MBV2_SETTING)]
        cin = _scaled(32, width)
        blocks: list[nn.Module] = [conv_bn_relu6(3, cin, 3, 2)]
        self.block_stages: list[int] = []
        self.taps: list[int] = []  # feature index after which each output is taken
        stage = 1
        for t, c, n, s in setting:
            cout = _scaled(c, width)
            for i in range(n):
                stride = s if i == 0 else 1
                stage += stride == 2
                blocks.append(TVInvertedResidual(cin, cout, stride, t))
                self.block_stages.append(stage)
                cin = cout
            if c in (32, 96, 320):
                self.taps.append(len(blocks) - 1)
        self.features = nn.Sequential(*blocks)
        self.out_channels = tuple(_scaled(c, width) for c in (32, 96, 320))

    def point_specs(self, prefix: str) -> list[PointSpec]:
        return [PointSpec(f"{prefix}features.{i}", stage) for i, stage in enumerate(self.block_stages, start=1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.taps:
                outs.append(x)
        return outs


class YOLOv3Neck(nn.Module):
    """YOLOv3's FPN: per scale, from deep to shallow, a five-conv set (1x1, 3x3, 1x1, 3x3, 1x1);
    its output feeds the head and, through a 1x1 conv and 2x upsampling, the next scale's set."""

    def __init__(self, in_channels: Sequence[int], width: float = 1.0):
        super().__init__()
        c3, c4, c5 = in_channels
        n5, n4, n3 = (_scaled(c, width) for c in (512, 256, 128))
        self.sets = nn.ModuleList([self._five(c5, n5), self._five(c4 + n5 // 2, n4), self._five(c3 + n4 // 2, n3)])
        self.laterals = nn.ModuleList([conv_bn_leaky(n5, n5 // 2), conv_bn_leaky(n4, n4 // 2)])
        self.out_channels = (n3, n4, n5)

    @staticmethod
    def _five(cin: int, c: int) -> nn.Sequential:
        return nn.Sequential(conv_bn_leaky(cin, c), conv_bn_leaky(c, 2 * c, 3), conv_bn_leaky(2 * c, c),
                             conv_bn_leaky(c, 2 * c, 3), conv_bn_leaky(2 * c, c))  # fmt: skip

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        p5 = self.sets[0](c5)
        p4 = self.sets[1](torch.cat([F.interpolate(self.laterals[0](p5), size=c4.shape[2:], mode="nearest"), c4], 1))
        p3 = self.sets[2](torch.cat([F.interpolate(self.laterals[1](p4), size=c3.shape[2:], mode="nearest"), c3], 1))
        return [p3, p4, p5]


class YOLOv3Head(nn.Module):
    def __init__(self, in_channels: Sequence[int], num_anchors: int, num_classes: int):
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(conv_bn_leaky(c, 2 * c, 3), nn.Conv2d(2 * c, num_anchors * (5 + num_classes), 1)) for c in in_channels
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, feats, strict=True)]


BACKBONES = {"darknet53": DarkNet53, "mobilenetv2": MobileNetV2Backbone}


class YOLOv3(FeatureContract, nn.Module):
    """YOLOv3 detector; ``forward(x) -> [raw maps at strides 8, 16, 32]``."""

    classifier_name = "head.heads.0.1"  # the stride-8 output conv: A * (5 + classes) filters

    def __init__(self, backbone: str = "darknet53", num_classes: int = 80, input_size: tuple[int, int] = (416, 416),
                 anchors: Sequence[Sequence[float]] | None = None, width: float = 1.0, depth: Sequence[int] | None = None):  # fmt: skip
        super().__init__()
        kwargs = {} if depth is None else {"depth": depth}
        self.backbone = BACKBONES[backbone](width=width, **kwargs)
        self.neck = YOLOv3Neck(self.backbone.out_channels, width=width)
        if anchors is None:
            h, w = input_size
            anchors = [(aw * w / 416, ah * h / 416) for aw, ah in COCO_ANCHORS_416]
        anchors_t = torch.tensor(anchors, dtype=torch.float32).reshape(len(STRIDES), -1, 2)
        self.register_buffer("anchors", anchors_t)  # (scales, A, 2) pixels, small to large
        self.head = YOLOv3Head(self.neck.out_channels, anchors_t.shape[1], num_classes)
        self.num_classes = num_classes
        self.strides = STRIDES
        init_weights(self)
        self._init_head_bias()

    def _init_head_bias(self) -> None:
        """Objectness prior ~ 1% and uniform classes (the focal-loss / YOLOv5 initialisation) so
        early training is not swamped by background; a documented addition to YOLOv3."""
        for stride, seq in zip(self.strides, self.head.heads, strict=True):
            conv = seq[1]
            nn.init.normal_(conv.weight, 0, 0.01)
            bias = conv.bias.data.view(self.anchors.shape[1], -1)
            bias[:, 4] = math.log(8 / (640 / stride) ** 2)
            bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 1e-3))

    def point_specs(self) -> list[PointSpec]:
        return self.backbone.point_specs("backbone.")

    def output_modules(self) -> list[str]:
        """The output convolutions' module paths, one per stride (their outputs are the raw maps)."""
        return [f"head.heads.{i}.1" for i in range(len(self.head.heads))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.neck(self.backbone(x)))


def classes_from_head(weight: torch.Tensor, num_anchors: int = 3) -> int:
    """Class count from the output conv's weight (A * (5 + C), ...)."""
    return int(weight.shape[0]) // num_anchors - 5
