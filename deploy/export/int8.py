"""INT8 as a Q/DQ ONNX from static, per-channel calibration on the user's data.

Q/DQ is the one INT8 form that ONNX Runtime, TensorRT 8.x, 10.x and 11 all run (REFERENCE.md §3).
Weights and activations are symmetric signed INT8 (TensorRT accepts only symmetric scales).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compressor.io import atomic_write


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an iterator of (B, 3, H, W) batches."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]):
        self.input_name, self.batches = input_name, batches

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_qdq(fp32_path: str | Path, out_path: str | Path, batches: Iterator[np.ndarray], method: str = "minmax") -> Path:
    """Calibrate on ``batches`` and write a Q/DQ INT8 model.

    Args:
        method: ``minmax`` or ``percentile`` (99.999th) activation ranges.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(methods)}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    input_name = onnx.load(str(fp32_path)).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(quantized),
            _Reader(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        data = quantized.read_bytes()
    return atomic_write(out_path, lambda f: f.write(data))
