"""What export and profiling take as a model: a student artifact, a checkpoint, or an exported file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.models import model_entry
from torch import nn

from compressor.checkpoint import load_checkpoint
from compressor.data.base import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from compressor.errors import UserError

STUDENT_SCHEMA = "edge-compressor/student"


@dataclass
class ModelArtifact:
    """A classifier with what preprocessing needs; ``model`` is None for .onnx/.plan files."""

    path: Path
    arch: str | None
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = field(default_factory=list)
    model: nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.arch or self.path.stem


def sidecar_of(path: Path) -> dict[str, Any] | None:
    """``student.pt`` -> ``student.json`` (also ``x.onnx`` -> ``x.json``), if present and ours."""
    side = path.with_suffix(".json")
    if not side.exists():
        return None
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{side} is not valid JSON ({e}); re-create it or remove it") from None
    return meta if isinstance(meta, dict) else None


def load_artifact(path: str | Path, arch: str | None = None, trusted: bool = False) -> ModelArtifact:
    """Load a student artifact (``student.pt`` + ``student.json``), any supported checkpoint
    (architecture given or inferred), or an exported ``.onnx`` file with its sidecar."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    meta = sidecar_of(path) or {}
    if path.suffix == ".onnx":
        if not meta:
            raise UserError(f"{path} has no sidecar {path.with_suffix('.json').name}: export it with 'compressor export'")
        return ModelArtifact(path, meta.get("arch"), meta["num_classes"], tuple(meta["input_size"]), tuple(meta["mean"]),
                             tuple(meta["std"]), meta.get("class_names", []), None, meta)  # fmt: skip
    loaded = load_checkpoint(path, arch=arch or meta.get("arch"), num_classes=meta.get("num_classes"), trusted=trusted,
                             options=meta.get("model_options"))  # fmt: skip
    entry = model_entry(loaded.arch)
    default_mean, default_std = (CIFAR100_MEAN, CIFAR100_STD) if entry.family == "cifar" else (IMAGENET_MEAN, IMAGENET_STD)
    return ModelArtifact(
        path,
        loaded.arch,
        loaded.num_classes,
        tuple(meta.get("input_size", entry.input_size)),
        tuple(meta.get("mean", default_mean)),
        tuple(meta.get("std", default_std)),
        list(meta.get("class_names", [])),
        loaded.model.eval(),
        {**meta, "digest": loaded.digest} if meta.get("schema") == STUDENT_SCHEMA else {"digest": loaded.digest},
    )
