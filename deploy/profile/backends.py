"""The profiling backends: one registry of runtimes (PyTorch, ONNX Runtime, TensorRT) and the ONNX
files each model needs, made on first use. The profiler and its memory worker both read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressor.models import Registry
from pydantic import Field

from compressor.config import Strict
from compressor.errors import UserError

from ..artifact import ModelArtifact, is_detector, is_qdq
from ..errors import BackendUnavailable
from ..export import FORMATS, ExportOptions
from ..export.detection import DetectorExport
from ..runtime.base import Runtime
from ..runtime.ort_runtime import OrtRuntime
from ..runtime.torch_runtime import TorchRuntime


class ProfileOptions(Strict):
    """Profiling settings: ``compressor profile``'s flags, the API's keyword arguments and the
    pipeline's ``profile:`` section (which extends this one)."""

    backends: list[str] = Field(default_factory=lambda: ["torch", "ort-cpu", "ort-cpu-int8"])
    batches: list[int] = Field(default_factory=lambda: [1, 8, 32])
    data: str | None = None  # evaluation spec (test split); also calibration (train split) for INT8
    eval_samples: int = 1000
    warmup: int = 10
    iters: int = 50
    max_seconds: float = 10.0
    call_timeout: float = Field(default=60.0, gt=0)  # one ONNX Runtime call longer than this is stopped (a graph that never ends)
    progress: bool = True
    memory_worker: bool = True  # memory measured per (model, backend) in a fresh process (``worker.py``)
    rounds: int = 5  # latency: every (model, backend, batch) timed in this many interleaved rounds
    spread_warning: float = 0.25  # warn when the p10-p90 range of a configuration's round medians exceeds this fraction
    trusted: bool = False  # the worker reloads the model with the same trust
    e2e: str | None = None  # end-to-end latency from image files: a file or folder, or "" for PNGs of the data's test images
    e2e_iters: int = 30


class Exports:
    """ONNX files of one model, made on first need under ``folder``."""

    def __init__(self, art: ModelArtifact, folder: Path, options: ProfileOptions):
        self.art, self.folder, self.options = art, folder, options
        self.files: dict[str, Path] = {}
        self.info: dict[str, Any] = {}

    def get(self, kind: str) -> Path:
        """The ``kind`` file (a name of the export registry), made with what it is made from first."""
        art = self.art
        if art.model is None and kind == ("int8" if is_qdq(art.path) else "onnx"):  # the given ONNX file itself
            return art.path
        if kind in self.files:
            return self.files[kind]
        if art.model is None:  # an .onnx file was given: its INT8 form is made from it, nothing else
            if kind == "onnx":
                raise BackendUnavailable(f"{art.path.name} is already INT8 (Q/DQ); the fp32 backends need an fp32 file")
            if kind != "int8":
                raise BackendUnavailable(f"a {kind} export needs the PyTorch model; {art.path.name} is an ONNX file")
            if not self.options.data:
                raise BackendUnavailable("INT8 from an ONNX file needs --data to calibrate on (its train split)")
        elif kind.startswith("int8"):
            if is_detector(art):
                raise UserError(
                    f"{art.name} is a detector: make its INT8 file with compressor export --int8 --calib yolo:PATH "
                    "(labelled images) and profile that .int8.onnx, or profile this one with --backend torch,ort-cpu"
                )
            if not self.options.data:  # skipped with its reason; the other backends still run
                raise BackendUnavailable("INT8 backends need --data to calibrate on (its train split)")
        opts = ExportOptions(int8=kind.startswith("int8"), calib=self.options.data, eval_samples=min(self.options.eval_samples, 500))
        fmt = FORMATS.get(kind)
        self.folder.mkdir(parents=True, exist_ok=True)
        made_from = {"onnx": self.get("onnx")} if kind != "onnx" else {}
        stem = art.name if art.model is not None else art.path.stem
        self.files[kind], info = fmt.build(art, opts, made_from, fmt.path(self.folder, stem))
        if info is not None and kind != "onnx":
            self.info[kind] = info
        return self.files[kind]


def _pytorch_model(art: ModelArtifact):
    """The model as the torch backends run it: a detector with its decoding (boxes, scores), as exported."""
    if art.model is None:
        raise BackendUnavailable(f"{art.path.name} is an ONNX file; the torch backends need a checkpoint or student artifact")
    return DetectorExport(art.model, with_nms=False) if is_detector(art) else art.model


def _torch(art: ModelArtifact, exports: Exports) -> Runtime:
    return TorchRuntime(_pytorch_model(art))


def _torch_compile(art: ModelArtifact, exports: Exports) -> Runtime:
    return TorchRuntime(_pytorch_model(art), compile_model=True)


def _torch_cuda(precision: str) -> Callable[[ModelArtifact, Exports], Runtime]:
    def build(art: ModelArtifact, exports: Exports) -> Runtime:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("the torch CUDA backends need an NVIDIA GPU and a CUDA build of torch; none is visible")
        return TorchRuntime(_pytorch_model(art), device="cuda", precision=precision)

    return build


def _trt(precision: str) -> Callable[[ModelArtifact, Exports], Runtime]:
    def build(art: ModelArtifact, exports: Exports) -> Runtime:
        from ..runtime.trt_runtime import TensorRTRuntime
        from ..tensorrt.build import build_engine

        source = exports.get("int8-trt" if precision == "int8" else "onnx")
        return TensorRTRuntime(build_engine(source, exports.folder, precision=precision))

    return build


BACKENDS: Registry[Callable[[ModelArtifact, Exports], Runtime]] = Registry("backend")
BACKENDS.register("torch", _torch)
BACKENDS.register("torch-compile", _torch_compile)
BACKENDS.register("torch-cuda", _torch_cuda("fp32"))
BACKENDS.register("torch-cuda-fp16", _torch_cuda("fp16"))
BACKENDS.register("ort-cpu", lambda art, ex: OrtRuntime(ex.get("onnx"), call_limit_s=ex.options.call_timeout))
BACKENDS.register("ort-cpu-int8", lambda art, ex: OrtRuntime(ex.get("int8"), call_limit_s=ex.options.call_timeout))
BACKENDS.register("ort-cuda", lambda art, ex: OrtRuntime(ex.get("onnx"), provider="cuda", call_limit_s=ex.options.call_timeout))
BACKENDS.register("ort-tensorrt", lambda art, ex: OrtRuntime(ex.get("onnx"), provider="tensorrt", precision="fp16", cache_dir=ex.folder,
                                                           call_limit_s=ex.options.call_timeout))  # fmt: skip
BACKENDS.register("tensorrt-fp16", _trt("fp16"))
BACKENDS.register("tensorrt-int8", _trt("int8"))
