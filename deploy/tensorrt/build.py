"""TensorRT engine building from ONNX, for TensorRT 8.5-10 and 11 (TensorRT Python API documentation).

8.5-10: explicit-batch network (flag needed on 8.x, implicit on 10), workspace pool limit, one
optimisation profile, FP16 / INT8 builder flags (INT8 from an entropy calibrator with a cache,
or from Q/DQ nodes). 11: strongly typed networks only; FP16 must come from an FP16 ONNX and INT8
from a Q/DQ ONNX, so the precision is the file's. Engines are not portable across GPUs or
TensorRT versions: ``engine_name`` keys them by GPU, compute capability and version (+ L4T
release on Jetson), and metadata lives in a sidecar JSON, never in the plan file.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from compressor.io import atomic_write, atomic_write_json

from ..artifact import is_qdq
from ..errors import BackendUnavailable


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT is not installed: on a desktop GPU `pip install tensorrt`; on Jetson it comes with JetPack "
            "(use the Jetson Docker image). ONNX Runtime's TensorRT provider is the other route"
        ) from None
    return trt


def trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def l4t_release() -> str | None:
    """'36.4.0' on a Jetson (from /etc/nv_tegra_release), None elsewhere."""
    try:
        text = Path("/etc/nv_tegra_release").read_text()
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def gpu_identity() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs an NVIDIA GPU and none is visible (torch.cuda.is_available() is False)")
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "l4t": l4t_release()}


def engine_name(stem: str, precision: str, trt_version: str, gpu: dict[str, Any]) -> str:
    """``student.nvidia-geforce-rtx-4090.sm89.trt10.3.0.fp16.plan``: one engine per GPU and version."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu["gpu"].lower()).strip("-")
    l4t = f".l4t{gpu['l4t']}" if gpu.get("l4t") else ""
    return f"{stem}.{slug}.sm{gpu['compute_capability'].replace('.', '')}.trt{trt_version}{l4t}.{precision}.plan"


def make_calibrator(trt, batches: Iterator[np.ndarray], cache: Path):
    """An ``IInt8EntropyCalibrator2`` over preprocessed batches, with a calibration cache file."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches, self.device_batch, self.size = batches, None, None

        def get_batch_size(self):
            return self.size or 1

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.size = len(batch)
            self.device_batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            atomic_write(cache, lambda f: f.write(bytes(data)))

    return EntropyCalibrator()


def build_engine(
    onnx_path: str | Path,
    out_dir: str | Path,
    precision: str = "fp16",
    batch: tuple[int, int, int] = (1, 8, 32),
    workspace: int = 1 << 30,
    calib: Iterator[np.ndarray] | None = None,
) -> Path:
    """Build (or reuse from the cache) an engine for this GPU; returns the plan's path.

    Args:
        precision: ``fp32``, ``fp16`` or ``int8``; on TensorRT 11 it must match the ONNX file.
        batch: (min, opt, max) batch of the optimisation profile.
        calib: INT8 calibration batches for a non-Q/DQ ONNX on TensorRT < 11.
    """
    trt = import_tensorrt()
    gpu = gpu_identity()
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    plan = out_dir / engine_name(onnx_path.stem, precision, trt.__version__, gpu)
    if plan.exists():
        return plan
    major = trt_major(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major >= 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        chw = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (batch[0], *chw), (batch[1], *chw), (batch[2], *chw))
    config.add_optimization_profile(profile)
    _set_precision(trt, major, config, precision, onnx_path, calib, out_dir)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    atomic_write(plan, lambda f: f.write(bytes(serialized)))
    atomic_write_json(plan.with_suffix(".json"), {"onnx": onnx_path.name, "precision": precision, "trt_version": trt.__version__,
                                                  "batch": list(batch), "host": platform.node(), **gpu})  # fmt: skip
    return plan


def _set_precision(trt, major: int, config, precision: str, onnx_path: Path, calib, out_dir: Path) -> None:
    qdq = is_qdq(onnx_path)
    if major >= 11:
        # strongly typed: the ONNX decides (TensorRT 11: strongly typed networks)
        if precision == "int8" and not qdq:
            raise ValueError("TensorRT 11 builds INT8 only from a Q/DQ ONNX: export with --int8 first")
        return
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers TensorRT keeps out of INT8 may still run FP16
        if not qdq:
            if calib is None:
                raise ValueError("INT8 from a plain ONNX needs calibration data (--calib) or a Q/DQ ONNX (--int8)")
            config.int8_calibrator = make_calibrator(trt, calib, out_dir / f"{onnx_path.stem}.calib.cache")


def read_sidecar(plan: Path) -> dict[str, Any]:
    return json.loads(plan.with_suffix(".json").read_text())
