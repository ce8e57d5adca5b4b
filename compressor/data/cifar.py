"""CIFAR-10 / CIFAR-100 in the python-pickle layout of the official archives.

``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``cifar-100-python/{train, test, meta}``; PATH may be that folder or the one containing it.
The files are pickles, so they are read with an unpickler that only admits the builtins and
NumPy array reconstruction those files contain: a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DatasetInfo, InMemoryImages

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}

# name -> (folder, train files, test files, meta file, label key, names key, mean, std)
_LAYOUTS = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        b"labels",
        b"label_names",
        CIFAR10_MEAN,
        CIFAR10_STD,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names", CIFAR100_MEAN, CIFAR100_STD),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR files hold only arrays, lists and dicts")


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"{path} is not a readable CIFAR batch file ({e}); download the python version of the dataset again") from None


class CifarDataset(InMemoryImages):
    def __init__(self, name: str, root: str | Path, split: str = "train"):
        folder, train_files, test_files, meta_file, label_key, names_key, mean, std = _LAYOUTS[name]
        root = Path(root)
        base = root if (root / meta_file).exists() else root / folder
        files = train_files if split == "train" else test_files
        missing = [f for f in files + [meta_file] if not (base / f).is_file()]
        if missing:
            raise UserError(
                f"{name}:{root} is not a CIFAR python-pickle folder: {', '.join(missing)} missing in {base}. "
                f"Point at the extracted '{folder}' folder (or the folder that contains it)"
            )
        data, labels = [], []
        for f in files:
            batch = _read(base / f)
            try:
                data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(batch[label_key])
            except (KeyError, ValueError) as e:
                raise UserError(f"{base / f} does not have the CIFAR layout ({e!r}); is this {name}?") from None
        meta = _read(base / meta_file)
        if not isinstance(meta, dict) or names_key not in meta:
            raise UserError(f"{base / meta_file} has no {names_key.decode()} list; is this the original {name} download?")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key])
        self._images = torch.from_numpy(np.concatenate(data))
        self._labels = np.asarray(labels, dtype=np.int64)
        if len(self._images) != len(self._labels):
            raise UserError(f"{base}: {len(self._images)} images but {len(self._labels)} labels")
        if self._labels.size and (self._labels.min() < 0 or self._labels.max() >= len(names)):
            raise UserError(f"{base}: labels outside 0..{len(names) - 1}")
        self.info = DatasetInfo(name, len(names), names, (32, 32), mean, std)
