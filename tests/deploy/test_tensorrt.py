"""TensorRT paths: they need an NVIDIA GPU and the TensorRT Python bindings; skipped otherwise."""

import importlib.util

import numpy as np
import pytest
import torch
from compressor.deploy.tensorrt.build import engine_name

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = torch.cuda.is_available()
needs_trt = pytest.mark.skipif(not (HAS_TRT and HAS_GPU), reason="TensorRT engine tests need an NVIDIA GPU and the tensorrt package")


def test_engine_cache_key():
    gpu = {"gpu": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "l4t": None}
    assert engine_name("student", "fp16", "10.3.0", gpu) == "student.nvidia-geforce-rtx-4090.sm89.trt10.3.0.fp16.plan"
    jetson = {"gpu": "Orin", "compute_capability": "8.7", "l4t": "36.4.0"}
    assert engine_name("s", "int8", "10.3.0", jetson) == "s.orin.sm87.trt10.3.0.l4t36.4.0.int8.plan"


@needs_trt
def test_build_and_run_engine_matches_onnx_runtime(tmp_path):
    from compressor.deploy.export.onnx_export import export_onnx
    from compressor.deploy.runtime.ort_runtime import OrtRuntime
    from compressor.deploy.runtime.trt_runtime import TensorRTRuntime
    from compressor.deploy.tensorrt.build import build_engine
    from compressor.models import create_model

    model = create_model("resnet8", num_classes=10).eval()
    export_onnx(model, tmp_path / "m.onnx", (32, 32))
    plan = build_engine(tmp_path / "m.onnx", tmp_path, precision="fp32", batch=(1, 4, 8))
    assert build_engine(tmp_path / "m.onnx", tmp_path, precision="fp32", batch=(1, 4, 8)) == plan  # cached
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(TensorRTRuntime(plan)(x), OrtRuntime(tmp_path / "m.onnx")(x), rtol=1e-2, atol=1e-3)
