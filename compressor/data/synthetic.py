"""The built-in synthetic classification task: no download, deterministic, learnable in seconds.

Each class owns a random multi-scale colour template (a 4x4 and a 16x16 random field,
upsampled and summed); a sample is its class template under a random contrast and brightness
plus pixel noise (std ``noise`` percent of the template's), optionally a distractor (another
class's template at a random weight up to ``mix`` percent, which makes some samples
ambiguous), and a random horizontal flip. Coarse and fine structure both carry the class,
so early and late layers of a trained network hold different information, which is what hint
selection needs to see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DatasetInfo, InMemoryImages

SPLIT_OFFSET = {"train": 0, "test": 1}


class SyntheticDataset(InMemoryImages):
    def __init__(
        self,
        split: str = "train",
        classes: int = 10,
        train: int = 2000,
        test: int = 500,
        size: int = 32,
        seed: int = 0,
        noise: int = 35,
        mix: int = 0,
    ):
        if split not in SPLIT_OFFSET:
            raise ValueError(f"split must be one of {list(SPLIT_OFFSET)}, got {split!r}")
        if classes < 2 or size < 8 or min(train, test) < 1 or noise < 0 or not 0 <= mix < 100:
            raise ValueError(f"synthetic data needs classes >= 2, size >= 8, train/test >= 1, noise >= 0 and 0 <= mix < 100 "
                             f"(got classes={classes}, size={size}, train={train}, test={test}, noise={noise}, mix={mix})")  # fmt: skip
        n = train if split == "train" else test
        templates = _templates(classes, size, seed)
        g = torch.Generator().manual_seed(seed * 7919 + 1 + SPLIT_OFFSET[split])
        self._labels = torch.randint(classes, (n,), generator=g)
        self._images = torch.empty(n, 3, size, size, dtype=torch.uint8)
        for start in range(0, n, 4096):  # in chunks: the float intermediate stays small
            y = self._labels[start : start + 4096]
            m = len(y)
            contrast = 0.6 + 0.8 * torch.rand(m, 1, 1, 1, generator=g)
            brightness = 0.3 * torch.randn(m, 1, 1, 1, generator=g)
            x = templates[y] * contrast + brightness + noise / 100 * torch.randn(m, 3, size, size, generator=g)
            if mix:  # a distractor: another class's template at a random weight below mix%
                other = (y + torch.randint(1, classes, (m,), generator=g)) % classes
                x = x + templates[other] * contrast * (mix / 100 * torch.rand(m, 1, 1, 1, generator=g))
            flip = torch.rand(m, generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
            self._images[start : start + m] = ((x * 0.25 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        names = tuple(f"class{c}" for c in range(classes))
        self.info = DatasetInfo("synthetic", classes, names, (size, size), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _templates(classes: int, size: int, seed: int) -> torch.Tensor:
    """(classes, 3, size, size) zero-mean templates, unit scale."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    fine = F.interpolate(torch.randn(classes, 3, 16, 16, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    t = coarse + 0.7 * fine
    return (t - t.mean()) / t.std()
