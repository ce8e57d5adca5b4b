"""Training augmentation and evaluation preprocessing, selected by the dataset.

CIFAR-size data: reflect-pad 4, random crop back, horizontal flip (the CIFAR protocol). Image
folders: the ImageNet protocol — RandomResizedCrop to the input size (area 8-100 %, aspect 3/4-4/3)
and a horizontal flip for training; resize the shorter side to size * 256 / 224, centre crop for
evaluation (He et al. 2016; torchvision's reference recipe), written here so that torchvision is
not needed. All work on uint8 (3, H, W) tensors and use torch's RNG.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


class PadCropFlip:
    """The standard CIFAR augmentation: reflect-pad ``pad`` pixels, random crop back, random
    horizontal flip. Works on one (3, H, W) image (uint8 or float in 0..255); uses torch's RNG."""

    takes_original = False  # works on the dataset's fixed-size image

    def __init__(self, pad: int = 4):
        self.pad = pad

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        _, h, w = image.shape
        padded = F.pad(image.float()[None], (self.pad,) * 4, mode="reflect")[0]
        top, left = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        out = padded[:, top : top + h, left : left + w]
        return out.flip(-1) if torch.rand(()) < 0.5 else out


class RandomResizedCropFlip:
    """ImageNet training augmentation on the decoded image of any size -> uint8 (3, *size).

    Crop box as torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of area in
    ``scale`` x image area and log-uniform aspect in ``ratio``; if none fits, a centre crop with the
    aspect clamped into ``ratio``. Resized bilinearly; flipped with probability 0.5."""

    takes_original = True  # needs the decoded image, not a resized one

    def __init__(self, size: tuple[int, int], scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = tuple(size), scale, ratio

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,)))
                left = int(torch.randint(0, width - w + 1, (1,)))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            h, w = height, round(height * max(self.ratio))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = self.box(image.shape[1], image.shape[2])
        out = resize(image[:, top : top + h, left : left + w], self.size)
        return out.flip(-1) if torch.rand(()) < 0.5 else out


def resize_center_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ImageNet evaluation: shorter side to round(min(size) * 256 / 224), then the centre ``size`` crop."""
    _, h, w = image.shape
    short = round(min(size) * 256 / 224)
    scale = short / min(h, w)
    resized = resize(image, (max(size[0], round(h * scale)), max(size[1], round(w * scale))))
    top, left = (resized.shape[1] - size[0]) // 2, (resized.shape[2] - size[1]) // 2
    return resized[:, top : top + size[0], left : left + size[1]]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, *size): area averaging when shrinking, bilinear when enlarging."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    shrink = size[0] * size[1] < image.shape[1] * image.shape[2]
    array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    out = cv2.resize(array, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(out.reshape(size[0], size[1], -1).transpose(2, 0, 1)))
