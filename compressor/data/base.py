"""What every dataset provides: labelled images as normalised float tensors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Takes a uint8 image (3, H, W) and returns a uint8 image (3, H', W'); used for augmentation.
Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ImageDataset(Dataset, ABC):
    """Base: subclasses implement ``__len__``, ``raw(i) -> (uint8 (3, H, W), label)`` and set ``info``.

    ``__getitem__`` returns ``(float image (3, H, W) normalised, label, index)``; the index is
    what memory-bank methods (CRD) need.
    """

    info: DatasetInfo
    transform: Transform | None = None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def raw(self, i: int) -> tuple[torch.Tensor, int]:
        """The i-th image as uint8 (3, H, W) before any transform, and its label."""

    @abstractmethod
    def labels(self) -> np.ndarray:
        """All labels (N,) without decoding images."""

    def augmentation(self) -> Transform:
        """The training augmentation of this kind of data: the CIFAR protocol by default."""
        from .augment import PadCropFlip

        return PadCropFlip(4)

    def original(self, i: int) -> torch.Tensor:
        """The i-th image as decoded, before resizing (an augmentation with ``takes_original`` reads it)."""
        return self.raw(i)[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self.transform is not None and getattr(self.transform, "takes_original", False):
            image, label = self.transform(self.original(i)), self.labels_at(i)
        else:
            image, label = self.raw(i)
            if self.transform is not None:
                image = self.transform(image)
        return normalise(image, self.info.mean, self.info.std), int(label), i

    def labels_at(self, i: int) -> int:
        return int(self.labels()[i])


def normalise(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 (3, H, W) with per-channel mean/std removed."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (image.float() / 255.0 - m) / s


class InMemoryImages(ImageDataset):
    """A dataset held as one uint8 tensor (N, 3, H, W) ``_images`` and labels (N,) ``_labels``."""

    _images: torch.Tensor
    _labels: np.ndarray | torch.Tensor

    def __len__(self) -> int:
        return len(self._labels)

    def raw(self, i: int) -> tuple[torch.Tensor, int]:
        return self._images[i], int(self._labels[i])

    def labels(self) -> np.ndarray:
        return np.asarray(self._labels)
