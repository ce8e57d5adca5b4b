"""One runtime interface over PyTorch, ONNX Runtime and TensorRT: the same evaluation and
profiling code runs on every backend."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Runtime(ABC):
    """Runs a classifier on a batch of preprocessed images.

    Attributes:
        backend: registry name (``torch``, ``torch-compile``, ``ort-cpu``, ...).
        device: ``cpu`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        weight_bytes: what its weights take: parameters and buffers at their stored type (PyTorch),
            the size of the file it loaded (ONNX Runtime, TensorRT), so INT8's saving shows.
    """

    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    weight_bytes: int | None = None

    @abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, num_classes) float32 logits."""

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the model, in graph order (a detector's boxes and scores); one output by default."""
        return [self(batch)]

    def synchronize(self) -> None:
        """Wait for queued device work; the latency clock calls it. CPU backends have none."""
        return None

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"
