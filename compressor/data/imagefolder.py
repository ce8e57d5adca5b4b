"""Image folders: ``PATH/<class>/<image>``, or ``PATH/{train,val|test}/<class>/<image>`` for splits."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import UserError
from .augment import PadCropFlip, RandomResizedCropFlip, resize, resize_center_crop
from .base import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, ImageDataset, Transform

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 1 << 26  # 64 MP (8192 x 8192): a larger image is refused before it is decoded


def read_image(path: Path) -> np.ndarray:
    """An image file as a BGR array (H, W, 3).

    The size in the file's header (PNG, JPEG, and through Pillow WebP, TIFF, BMP, GIF, ...) is
    checked before decoding: a 400 KB PNG can claim 20000 x 20000 pixels and decode to 1.2 GB.

    Raises:
        UserError: over ``MAX_PIXELS``, or not decodable.
    """
    size = header_size(path)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UserError(f"image {path} is {size[1]} x {size[0]} pixels, over the {MAX_PIXELS >> 20} MP limit; downscale it first")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own size guard, among others
        raise UserError(f"image {path} could not be read by OpenCV ({str(e).strip().splitlines()[-1]})") from None
    if image is None:
        raise UserError(f"image {path} could not be decoded (corrupt or not an image); remove or replace it")
    return image


def read_rgb(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W) at ``size`` (H, W), area-resized without keeping the aspect."""
    image = read_image(path)  # grey PNGs come back as 3 equal channels
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def header_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from a PNG IHDR or a JPEG SOF marker, else from the header Pillow reads (nothing is
    decoded); None for unreadable headers (the decoder then says what is wrong)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return height, width
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head) and head[i] == 0xFF:
            marker, length = head[i + 1], struct.unpack(">H", head[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", head[i + 5 : i + 9])
                return height, width
            i += 2 + length
    return _pillow_size(path)


def _pillow_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except Image.DecompressionBombError as e:  # far over MAX_PIXELS: Pillow refuses to say the size
            raise UserError(f"image {path}: {e}; downscale it first") from None
        except Exception:  # Pillow cannot read this header; OpenCV may still decode the file
            return None


_SPLIT_DIRS = {"train": ("train",), "test": ("val", "test")}


def _check_classes(base: Path, classes: list[str], samples: list[tuple[Path, int]]) -> None:
    """A classifier needs two classes or more, each with images: one class trains to a meaningless 100 %."""
    if len(classes) < 2:
        raise UserError(f"image folder {base} has {len(classes)} class folder(s); a classifier needs at least 2 (PATH/<class>/<image>)")
    counts = np.bincount([c for _, c in samples], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise UserError(f"image folder {base}: class folder(s) {', '.join(empty[:5])} hold no images; add images or remove the folder")


def _held_out(samples: list[tuple[Path, int]], classes: list[str], split: str, every: int, root: Path) -> list[tuple[Path, int]]:
    """A folder without train/val sub-folders: the test split is every ``every``-th image of each class (in
    name order, starting with the first), the train split the rest, so that no image is in both."""
    per_class: dict[int, list[Path]] = {}
    for path, label in samples:
        per_class.setdefault(label, []).append(path)
    small = [classes[c] for c, paths in per_class.items() if len(paths) < 2]
    if small:
        raise UserError(
            f"image folder {root} has no train/val sub-folders, so 1 image in {every} per class is held out for testing, but class(es) "
            f"{', '.join(small[:5])} have fewer than 2 images; add images, give {root}/train and {root}/val folders, or write "
            f"imagefolder:{root}:holdout=0 to evaluate on the training images themselves"
        )
    test = split != "train"
    return [(p, c) for c, paths in per_class.items() for i, p in enumerate(paths) if (i % every == 0) == test]


class ImageFolderDataset(ImageDataset):
    """Images are decoded with OpenCV on access. As ImageNet-style data they follow the ImageNet
    protocol: RandomResizedCrop(size) + flip for training, shorter side to size * 256 / 224 and a
    centre crop for evaluation (``compressor.data.augment``); ``squash=1`` resizes the whole image to
    ``size`` instead (and trains with the CIFAR pad-4 crop), for small images whose borders matter.

    Without ``train``/``val`` sub-folders, the test split holds out 1 image in ``holdout`` per
    class (``holdout=0``: train and test are the same images, as some benchmarks want)."""

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] = (224, 224), labelled: bool = True,
                 holdout: int = 5, squash: bool = False):  # fmt: skip
        if holdout < 0:
            raise ValueError(f"holdout={holdout}: hold out 1 image in N per class (N >= 2), or 0 for none")
        if min(size) < 1 or size[0] * size[1] > MAX_PIXELS:
            raise ValueError(f"size={size[0]}x{size[1]}: images are resized to between 1 and {MAX_PIXELS >> 20} MP (e.g. size=224)")
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"image folder {root} does not exist or is not a folder")
        base = next((root / d for d in _SPLIT_DIRS.get(split, ()) if (root / d).is_dir()), root)
        split_folders = any((root / d).is_dir() for dirs in _SPLIT_DIRS.values() for d in dirs)
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
        name = f"{'imagefolder' if labelled else 'images'}:{root}"
        if labelled and not split_folders and holdout:
            self.samples = _held_out(self.samples, classes, split, holdout, root)
            name += f" ({split}: 1 image in {holdout} per class held out for test)"
        self.size = tuple(size)
        self.squash = squash or not labelled  # unlabelled sets (hint selection on a detector's input) keep the whole frame
        self.info = DatasetInfo(name, len(classes), tuple(classes), self.size, IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.samples)

    def original(self, i: int) -> torch.Tensor:
        image = cv2.cvtColor(read_image(self.samples[i][0]), cv2.COLOR_BGR2RGB)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    def raw(self, i: int) -> tuple[torch.Tensor, int]:
        """The image at ``size``: squashed (``squash=1``), or the ImageNet evaluation crop (resize the
        shorter side to size * 256 / 224, centre crop)."""
        image = self.original(i)
        image = resize(image, self.size) if self.squash else resize_center_crop(image, self.size)
        return image, self.samples[i][1]

    def augmentation(self) -> Transform:
        """The ImageNet protocol's RandomResizedCrop + flip on the decoded image (squash=1: the CIFAR one)."""
        return PadCropFlip(4) if self.squash else RandomResizedCropFlip(self.size)

    def labels_at(self, i: int) -> int:
        return self.samples[i][1]

    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=np.int64)
