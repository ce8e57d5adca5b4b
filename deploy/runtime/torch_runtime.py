from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch._inductor.config
from torch import nn

from .base import Runtime


class TorchRuntime(Runtime):
    """PyTorch eager or ``torch.compile`` (Inductor with frozen weights), fp32 or bf16/fp16 autocast."""

    def __init__(self, model: nn.Module, device: str = "cpu", compile_model: bool = False, precision: str = "fp32"):
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"torch runtime precision must be fp32, fp16 or bf16, got {precision!r}")
        self.backend = "torch-compile" if compile_model else "torch"
        self.device, self.precision = device, precision
        self.model = model.eval().to(device)
        self.weight_bytes = sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))
        self._compiled = compile_model
        self._forward = torch.compile(self.model) if compile_model else self.model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]  # several outputs (a detector's boxes, scores): the first, as ONNX Runtime's

    @torch.inference_mode()
    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=dtype is not None):
            with torch._inductor.config.patch(freezing=True) if self._compiled else contextlib.nullcontext():
                out = self._forward(x)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outs]

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
