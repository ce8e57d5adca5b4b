"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): real data, no download.

Images are scaled from 0..16 to 0..255, resized to ``size`` (bilinear) and replicated to three
channels; a fixed, stratified 80/20 split gives the train and test sets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import DatasetInfo, InMemoryImages


class DigitsDataset(InMemoryImages):
    def __init__(self, split: str = "train", size: int = 32, seed: int = 0):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, got {split!r}")
        digits = load_digits()
        idx = np.arange(len(digits.target))
        train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=seed, stratify=digits.target)
        chosen = np.sort(train_idx if split == "train" else test_idx)
        images = torch.from_numpy(digits.images[chosen].astype(np.float32) * (255.0 / 16.0))[:, None]
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        self._images = images.clamp(0, 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        self._labels = digits.target[chosen].astype(np.int64)
        names = tuple(str(d) for d in range(10))
        self.info = DatasetInfo("digits", 10, names, (size, size), (0.2, 0.2, 0.2), (0.33, 0.33, 0.33))
