"""Datasets named by one spec string in every command: ``synthetic``, ``digits`` (scikit-learn's
bundled handwritten digits), ``cifar10:PATH``, ``cifar100:PATH``, ``imagefolder:PATH``, ``images:PATH``
(every image under PATH, unlabelled: for hint selection on a detector's images). Options follow a second colon as ``key=value,...``
(``synthetic:classes=4,train=512`` or ``imagefolder:/data/cars:size=96``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from compressor.models import Registry

from ..errors import UserError
from .augment import resize
from .base import DatasetInfo, ImageDataset, normalise
from .cifar import CifarDataset
from .digits import DigitsDataset
from .imagefolder import ImageFolderDataset
from .synthetic import SyntheticDataset

# name -> (needs a path, builder(path, split, options))
DATASETS: Registry[tuple[bool, Callable[..., ImageDataset]]] = Registry("dataset")
DATASETS.register("synthetic", (False, lambda path, split, o: SyntheticDataset(split, **o)))
DATASETS.register("cifar10", (True, lambda path, split, o: CifarDataset("cifar10", path, split, **o)))
DATASETS.register("cifar100", (True, lambda path, split, o: CifarDataset("cifar100", path, split, **o)))
DATASETS.register(
    "imagefolder",
    (True, lambda path, split, o: ImageFolderDataset(path, split, _size(o), holdout=o.get("holdout", 5), squash=bool(o.get("squash", 0)))),
)
DATASETS.register("images", (True, lambda path, split, o: ImageFolderDataset(path, split, _size(o), labelled=False)))
DATASETS.register("digits", (False, lambda path, split, o: DigitsDataset(split, **o)))

_INT_OPTIONS = {"classes", "train", "test", "size", "height", "width", "seed", "noise", "mix", "holdout", "squash"}


def open_dataset(spec: str, split: str = "train") -> ImageDataset:
    """Open the dataset a spec string names.

    Raises:
        UserError: unknown name, missing path, bad options, unreadable files.
    """
    name, path, options = parse_spec(spec)
    if name not in DATASETS:
        raise UserError(DATASETS.unknown_message(name) + " (spec form: NAME[:PATH][:key=value,...])")
    needs_path, build = DATASETS.get(name)
    if needs_path and not path:
        raise UserError(f"dataset {name!r} needs a path: {name}:/path/to/data")
    try:
        dataset = build(path, split, options)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad options for dataset {spec!r}: {e}") from None
    if len(dataset) == 0:
        raise UserError(f"dataset {spec!r} ({split} split) is empty")
    return dataset


def parse_spec(spec: str) -> tuple[str, str, dict[str, int]]:
    """``'cifar100:/d:k=v'`` -> ``('cifar100', '/d', {'k': v})``."""
    parts = spec.split(":")
    name = parts[0]
    rest = parts[1:]
    options: dict[str, int] = {}
    path_only = name in DATASETS and DATASETS.get(name)[0] and len(rest) == 1  # a folder may have '=' in its name
    if rest and "=" in rest[-1] and not path_only:
        for item in rest.pop().split(","):
            key, _, value = item.partition("=")
            if key not in _INT_OPTIONS or not value.lstrip("-").isdigit():
                raise UserError(f"bad dataset option {item!r} in {spec!r}; options are integers: {', '.join(sorted(_INT_OPTIONS))}")
            options[key] = int(value)
    return name, ":".join(rest), options


def _size(options: dict[str, int]) -> tuple[int, int]:
    size = options.get("size", 224)
    return (options.get("height", size), options.get("width", size))


__all__ = ["DATASETS", "DatasetInfo", "ImageDataset", "open_dataset", "parse_spec", "normalise"]


def fit_to(data: ImageDataset, size: tuple[int, int]) -> str | None:
    """Resize ``data``'s images to ``size`` (H, W) for a model whose input is fixed at another size (an
    ONNX graph exported at 224 x 224 fed 32 x 32 data); returns the note to show, None when they agree.
    Training augmentations are not combined with it: use it on evaluation and calibration data."""
    have = tuple(data.info.input_size)
    if have == tuple(size):
        return None
    data.transform = partial(resize, size=tuple(size))
    data.info = replace(data.info, input_size=tuple(size))
    return f"{data.info.name} images resized from {have[0]}x{have[1]} to the model's fixed input {size[0]}x{size[1]}"
