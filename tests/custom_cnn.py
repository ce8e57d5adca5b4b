"""A user's own residual CNN, as a factory reference names it (``tests/custom_cnn.py:build``).

Nothing here knows about the project: plain ``nn.Module`` classes with functional pieces and a
branch on the input size in ``forward``, the way research code is written.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm_a = nn.BatchNorm2d(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm_b = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.out_act = nn.ReLU()

    def forward(self, x):
        y = F.relu(self.norm_a(self.conv_a(x)))
        y = self.norm_b(self.conv_b(y))
        return self.out_act(y + (x if self.skip is None else self.skip(x)))


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8, blocks: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        chans = [width, 2 * width, 4 * width]
        layers, cin = [], width
        for i, c in enumerate(chans):
            for b in range(blocks):
                layers.append(Block(cin, c, 2 if i > 0 and b == 0 else 1))
                cin = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        if x.shape[-1] > 64:  # data-dependent control flow: symbolic tracing could not follow this
            x = F.avg_pool2d(x, 2)
        x = self.body(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(num_classes: int = 10, width: int = 8, blocks: int = 1) -> nn.Module:
    return TinyResNet(num_classes, width, blocks)


def plain(num_classes: int = 10) -> nn.Module:
    """A VGG-like chain without skip connections."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )  # fmt: skip


def not_a_model():
    return {"weights": None}


def broken(num_classes: int = 10):
    raise RuntimeError("checkpoint folder not configured")
