"""Image folders: ``PATH/<class>/<image>``, or ``PATH/{train,val|test}/<class>/<image>`` for splits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import UserError
from .base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, ImageDataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_SPLIT_DIRS = {"train": ("train",), "test": ("val", "test")}


def _check_classes(base: Path, classes: list[str], samples: list[tuple[Path, int]]) -> None:
    """A classifier needs two classes or more, each with images: one class trains to a meaningless 100 %."""
    if len(classes) < 2:
        raise UserError(f"image folder {base} has {len(classes)} class folder(s); a classifier needs at least 2 (PATH/<class>/<image>)")
    counts = np.bincount([c for _, c in samples], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(f"image folder {base}: class folder(s) {', '.join(empty[:5])} hold no images; add images or remove the folder")


class ImageFolderDataset(ImageDataset):
    """Images are decoded with OpenCV on access and resized to ``size`` (H, W)."""

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] = (224, 224), labelled: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"image folder {root} does not exist or is not a folder")
        base = next((root / d for d in _SPLIT_DIRS.get(split, ()) if (root / d).is_dir()), root)
        classes = sorted(d.name for d in base.iterdir() if d.is_dir()) if labelled else ["(unlabelled)"]
        folders = [base / name for name in classes] if labelled else [base]
        inside = root.resolve()
        # a link may point anywhere (a class folder linked to '..'): only files that resolve inside the dataset count
        self.samples: list[tuple[Path, int]] = [
            (f, c) for c, folder in enumerate(folders) for f in sorted(folder.rglob("*"))
            if f.suffix.lower() in EXTENSIONS and f.is_file() and f.resolve().is_relative_to(inside)
        ]  # fmt: skip
        if not self.samples:
            layout = "one sub-folder per class with" if labelled else "any"
            raise UserError(f"image folder {base} holds no images: expected {layout} {', '.join(sorted(EXTENSIONS))} files inside")
        if labelled:
            _check_classes(base, classes, self.samples)
        self.size = tuple(size)
        name = "imagefolder" if labelled else "images"
        self.info = DatasetInfo(f"{name}:{root}", len(classes), tuple(classes), self.size, IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.samples)

    def raw(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"image {path} could not be decoded (corrupt or not an image); remove or replace it")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image.shape[:2] != self.size:
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), label

    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)
