from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import is_qdq
from ..errors import BackendUnavailable
from .base import Runtime

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtRuntime(Runtime):
    """ONNX Runtime with the CPU, CUDA or TensorRT execution provider (ONNX Runtime's execution-provider documentation)."""

    def __init__(self, path: str | Path | bytes, provider: str = "cpu", precision: str | None = None, cache_dir: str | Path | None = None,
                 threads: int | None = None, spin: bool = True):  # fmt: skip
        """``path``: an ONNX file, or its bytes (with ``precision`` given). ``spin: False`` stops the
        threads from spinning between calls, for a runtime that shares the cores with other work
        (the INT8 teacher of a training step)."""
        import onnxruntime as ort

        if provider not in PROVIDERS:
            raise ValueError(f"unknown ONNX Runtime provider {provider!r}; known: {', '.join(PROVIDERS)}")
        available = ort.get_available_providers()
        if PROVIDERS[provider] not in available:
            raise BackendUnavailable(
                f"ONNX Runtime's {PROVIDERS[provider]} is not available here (available: {', '.join(available)}); "
                f"install onnxruntime-gpu with CUDA/TensorRT, or use --backend ort-cpu"
            )
        self.backend = f"ort-{provider}"
        self.precision = precision or ("int8" if is_qdq(path) else "fp32")
        self.device = "cpu" if provider == "cpu" else "cuda:0"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = [PROVIDERS[provider]]
        if provider == "tensorrt":
            trt_options = {"trt_fp16_enable": self.precision == "fp16", "trt_int8_enable": self.precision == "int8",
                           "trt_max_workspace_size": 1 << 30, "trt_engine_cache_enable": cache_dir is not None}  # fmt: skip
            if cache_dir is not None:
                trt_options["trt_engine_cache_path"] = str(cache_dir)
            providers = [(PROVIDERS[provider], trt_options), "CUDAExecutionProvider"]
        self.weight_bytes = len(path) if isinstance(path, bytes) else Path(path).stat().st_size
        self.session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=providers)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        # a foreign graph may take float16 or float64 images; ours take float32
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(first.type, np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)})
        return [o.astype(np.float32, copy=False) if o.dtype.kind == "f" else o for o in outs]
