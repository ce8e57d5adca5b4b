"""Small models in the styles of code users bring, written for the tests (copied from no one): the
project's discovery has never seen them, so they test it as foreign code would.

- ``tuple_resnet8x4`` / ``tuple_resnet20``: ``**kwargs`` factories of a CIFAR ResNet whose class needs
  ``num_classes`` and whose stage-last blocks return ``(out, preact)`` (the KD codebases' habit).
- ``mobile_like(num_classes)``: a required positional class count.
- ``dict_net``: blocks returning ``{"feat": map, "energy": vector}``.
- ``attention_net``: residual blocks with a spatial attention (a concat of mean and max maps) inside
  the residual branch.
- ``concat_net``: Inception-style blocks whose output is the concat of two branches.
- ``pair_net``: a model whose ``forward`` returns ``(logits, features)``; ``dict_out_net`` returns a dict.
"""

import torch
import torch.nn.functional as F
from torch import nn


class TupleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        preact = self.bn2(self.conv2(out)) + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class TupleResNet(nn.Module):
    def __init__(self, depth: int, widths: list[int], num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        self.conv, self.bn = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0])
        stages, cin = [], widths[0]
        for s, width in enumerate(widths[1:]):
            stages.append(
                nn.Sequential(*[TupleBlock(cin if i == 0 else width, width, 2 if s and i == 0 else 1, i == n - 1) for i in range(n)])
            )
            cin = width
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x, _ = self.layer1(x)
        x, _ = self.layer2(x)
        x, _ = self.layer3(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def tuple_resnet8x4(**kwargs):
    return TupleResNet(8, [32, 64, 128, 256], **kwargs)


def tuple_resnet20(**kwargs):
    return TupleResNet(20, [16, 16, 32, 64], **kwargs)


class _Inverted(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU6(), nn.Conv2d(2 * c, c, 1), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


def mobile_like(num_classes):
    """A required positional class count (no default)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), _Inverted(8), _Inverted(8), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         _Inverted(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))  # fmt: skip


class DictBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        feat = F.relu(self.bn(self.conv(x)) + x)
        return {"energy": feat.pow(2).mean((2, 3)), "feat": feat}


class DictNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.blocks = nn.ModuleList(DictBlock(16) for _ in range(3))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)["feat"]
        return self.fc(x.mean((2, 3)))


def dict_net(num_classes=10):
    return DictNet(num_classes)


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, 1, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))


class AttentionBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.attention, self.relu = SpatialAttention(), nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.relu(out * self.attention(out) + x)


def attention_net(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), AttentionBlock(16), AttentionBlock(16), nn.MaxPool2d(2), AttentionBlock(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))  # fmt: skip


class ConcatBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.narrow, self.wide = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c, c // 2, 3, 1, 1)

    def forward(self, x):
        return F.relu(torch.cat([self.narrow(x), self.wide(x)], 1))


def concat_net(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), ConcatBlock(16), nn.MaxPool2d(2), ConcatBlock(16), ConcatBlock(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))  # fmt: skip


class PairNet(nn.Module):
    """``forward`` returns ``(logits, features)``, as many KD codebases' models do."""

    def __init__(self, num_classes: int = 10, as_dict: bool = False):
        super().__init__()
        self.as_dict = as_dict
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), ConcatBlock(16), nn.MaxPool2d(2), ConcatBlock(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        features = self.body(x).mean((2, 3))
        logits = self.fc(features)
        return {"features": features, "logits": logits} if self.as_dict else (logits, features)


def pair_net(num_classes=10):
    return PairNet(num_classes)


def dict_out_net(num_classes=10):
    return PairNet(num_classes, as_dict=True)


def fixed64_net(num_classes=10):
    """Runs at 64 x 64 only: its classifier reads a flattened 8 x 8 map (a size rule no discovery can guess)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), ConcatBlock(8), nn.MaxPool2d(2), ConcatBlock(8), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))  # fmt: skip


class TokenBlock(nn.Module):
    """A pre-norm transformer block on (B, N, D) tokens."""

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches of 8 x 8, a class token, learned positions, three blocks, the class token classified."""

    def __init__(self, num_classes: int = 10, dim: int = 32, image: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + (image // 8) ** 2, dim))
        self.blocks = nn.Sequential(*[TokenBlock(dim) for _ in range(3)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def tiny_vit(num_classes=10):
    return TinyViT(num_classes)


def mlp_net(num_classes=10):
    """No map anywhere: a classifier of flattened pixels (logit methods only)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, num_classes))
