"""VGG with batch norm (Simonyan & Zisserman 2015), RepDistiller's CIFAR layout.

``block0..block4`` are Sequentials of conv-BN(-ReLU); the ReLU after a block's last BN is
applied by the network, and ``pool0..pool4`` / ``classifier`` follow. Candidates are the
conv-BN-ReLU units; the stage is the block. As in RepDistiller, ``pool3`` is applied only to
64-pixel-high inputs, so that 32x32 images keep a 4x4 map for ``block4`` and logits match
RepDistiller's at every input size.
"""

from __future__ import annotations

import torch
from torch import nn

from .features import FeatureContract, PointSpec
from .layers import init_weights

VGG_CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(widths: list[int], cin: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    return nn.Sequential(*layers[:-1])  # the last ReLU lives in ``acts`` (state-free, keys unchanged)


class VGG(FeatureContract, nn.Module):
    classifier_name = "classifier"

    def __init__(self, cfg: list[list[int]], num_classes: int = 100):
        super().__init__()
        self.cfg = cfg
        cin = 3
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", _block(widths, cin))
            cin = widths[-1]
        self.acts = nn.ModuleList([nn.ReLU() for _ in cfg])
        for i in range(4):
            self.add_module(f"pool{i}", nn.MaxPool2d(2, 2))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self)

    def point_specs(self) -> list[PointSpec]:
        specs = []
        for b, widths in enumerate(self.cfg):
            for u in range(len(widths)):
                tap = f"acts.{b}" if u == len(widths) - 1 else f"block{b}.{3 * u + 2}"
                specs.append(PointSpec(f"block{b}.{3 * u}", b + 1, tap))
        return specs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_pool3 = x.shape[2] == 64
        for i in range(5):
            x = self.acts[i](getattr(self, f"block{i}")(x))
            if i < 3 or (i == 3 and use_pool3):
                x = getattr(self, f"pool{i}")(x)
        return self.classifier(torch.flatten(self.pool4(x), 1))
