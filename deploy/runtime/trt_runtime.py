from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tensorrt.build import import_tensorrt, read_sidecar
from .base import Runtime


class TensorRTRuntime(Runtime):
    """A serialized TensorRT engine run through the name-based tensor API (TensorRT >= 8.5):
    ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``; device buffers are torch
    CUDA tensors, so neither pycuda nor cuda-python is needed."""

    backend = "tensorrt"

    def __init__(self, plan: str | Path):
        import torch

        trt = import_tensorrt()
        self.torch = torch
        self.device = "cuda:0"
        self.precision = read_sidecar(Path(plan)).get("precision", "fp32")
        logger = trt.Logger(trt.Logger.WARNING)
        self.weight_bytes = Path(plan).stat().st_size
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{plan} could not be deserialised: built for another GPU or TensorRT version?")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        self.context.set_input_shape(self.inputs[0], tuple(x.shape))
        self.context.set_tensor_address(self.inputs[0], x.data_ptr())
        outs = {}
        for name in self.outputs:  # shapes are known once the inputs' are set
            outs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return [outs[name].cpu().numpy() for name in self.outputs]

    def synchronize(self) -> None:
        self.stream.synchronize()
