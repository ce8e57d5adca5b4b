"""A labelled detection folder in the YOLO layout, for calibrating and scoring an exported detector.

``ROOT/images/<split>/**/<name>.<ext>`` with ``ROOT/labels/<split>/**/<name>.txt`` beside it
(Ultralytics' dataset layout; ``pixel/`` is accepted for ``images/``, the layout cross
distillation writes). Label files hold ``class cx cy w h`` per line, normalised to 0..1; an image
without a label file has no objects (Ultralytics' background images). The ``test`` split falls
back to ``val``. Images are resized to the model's input (no letterbox: how the zoo detectors
are trained) and normalised with the model's mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.imagefolder import EXTENSIONS, read_rgb
from ..data.paired import parse_yolo_labels
from ..errors import UserError
from .boxes import cxcywh_to_xyxy

IMAGE_FOLDERS = ("images", "pixel")
SPLIT_NAMES = {"train": ("train",), "test": ("test", "val")}


def _folder(root: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise UserError(f"{root} has no {what} folder ({' or '.join(names)}): a detection set is ROOT/images/<split>/ with "
                    "ROOT/labels/<split>/ of YOLO label files (class cx cy w h, normalised)")  # fmt: skip


class DetectionFolder(Dataset):
    """Items ``(image float (3, H, W) normalised, labels (M, 5) class cx cy w h, index)``."""

    detection = True

    def __init__(self, root: str | Path, split: str, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...],
                 num_classes: int | None = None):  # fmt: skip
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"detection set {root} does not exist or is not a folder")
        images = _folder(_folder(root, IMAGE_FOLDERS, "images"), SPLIT_NAMES[split], f"{split} images")
        labels = _folder(root, ("labels",), "labels") / images.name
        self.files = sorted(f for f in images.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
        if not self.files:
            raise UserError(f"{images} holds no images ({', '.join(sorted(EXTENSIONS))})")
        self.targets, problems = [], []
        for f in self.files:
            label = labels / f.relative_to(images).with_suffix(".txt")
            rows, bad = parse_yolo_labels(label, num_classes) if label.exists() else (np.zeros((0, 5), np.float32), [])
            self.targets.append(torch.from_numpy(rows))
            problems += bad
        if problems:
            more = f" ... ({len(problems) - 5} more)" if len(problems) > 5 else ""
            raise UserError(f"{len(problems)} malformed label lines in {labels}: {'; '.join(problems[:5])}{more}")
        if not any(len(t) for t in self.targets):
            raise UserError(f"no objects labelled in {labels}: AP50 needs ground-truth boxes (YOLO text files beside the images)")
        self.size = tuple(size)
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = read_rgb(self.files[i], self.size).float() / 255.0
        return (image - self.mean) / self.std, self.targets[i], i

    def truth(self, i: int) -> torch.Tensor:
        return truth(self.targets[i], self.size)


def truth(rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """YOLO rows (M, 5) class, cx, cy, w, h normalised -> (M, 5) class, x1, y1, x2, y2 in pixels of an
    image of ``size`` (H, W): the ground truth AP reads."""
    h, w = size
    return torch.cat([rows[:, :1], cxcywh_to_xyxy(rows[:, 1:5]) * torch.tensor([w, h, w, h])], 1)


def collate(batch: list) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]
