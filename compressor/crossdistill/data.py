"""Paired pixel / HEVC datasets for cross distillation (thesis 000 ch. 5).

A set is ``pixel/``, ``hevc/`` (and ``labels/`` for detection) roots with ``train/`` and
``test/`` inside, paired by relative stem (``compressor.data.paired``). Every item carries
both domains, so teacher and student see the same scene in their own domain. HEVC images
are grey; they are repeated to three channels so any zoo network takes them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data.imagefolder import read_rgb as read_image
from ..data.paired import check_pairs
from ..errors import UserError

DOMAINS = ("pixel", "hevc")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # both domains, images scaled to 0..1 first


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float centred on 0 (both domains alike)."""
    return (images.float() / 255.0 - MEAN[0]) / STD[0]


class PairedSet(Dataset):
    """Items ``(pixel uint8 (3, H, W), hevc uint8 (3, H, W), target)``; target is a class index
    (recognition: the class folder) or a (M, 5) float tensor of YOLO rows (detection)."""

    def __init__(self, pixel: str | Path, hevc: str | Path, split: str, size: tuple[int, int], labels: str | Path | None = None,
                 num_classes: int | None = None):  # fmt: skip
        roots = [Path(pixel) / split, Path(hevc) / split] + ([Path(labels) / split] if labels else [])
        report = check_pairs(*roots[:2], roots[2] if labels else None, num_classes)
        if not report.ok:
            raise UserError(f"the {split} split's pixel and HEVC sets do not pair up: {report.summary()}")
        self.pairs = report.pairs
        self.size = tuple(size)
        self.detection = labels is not None
        if self.detection:
            self.targets = [torch.from_numpy(report.labels[stem]) for stem, _, _ in self.pairs]
            self.classes = num_classes or 1 + max((int(t[:, 0].max()) for t in self.targets if len(t)), default=0)
        else:
            names = sorted({stem.split("/")[0] for stem, _, _ in self.pairs if "/" in stem})
            if len(names) < 2:
                raise UserError(f"{roots[0]} needs one sub-folder per class (found {len(names)}) for recognition")
            index = {n: i for i, n in enumerate(names)}
            self.targets = [index[stem.split("/")[0]] for stem, _, _ in self.pairs]
            self.class_names = names
            self.classes = len(names)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        _, pixel, hevc = self.pairs[i]
        return read_image(pixel, self.size), read_image(hevc, self.size), self.targets[i]


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack both domains; detection targets become (N, 6) rows of batch index + YOLO row."""
    pixel = torch.stack([b[0] for b in batch])
    hevc = torch.stack([b[1] for b in batch])
    if isinstance(batch[0][2], torch.Tensor):
        targets = torch.cat([torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, (_, _, t) in enumerate(batch)])
    else:
        targets = torch.tensor([b[2] for b in batch])
    return pixel, hevc, targets
