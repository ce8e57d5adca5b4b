from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from compressor.errors import UserError

from ..artifact import is_qdq
from ..errors import BackendUnavailable
from .base import Runtime

CALL_LIMIT_S = 60.0  # one inference call longer than this is a graph that does not end (a Loop whose condition never falls)


class _Watchdog:
    """One daemon thread for every ONNX Runtime call of the process: a call past its deadline gets its
    ``RunOptions.terminate`` flag set, and ONNX Runtime stops the graph (inside a Loop too) with an error.
    A thread per call would add its start-up to every timed call; this costs a lock and a dict entry."""

    _shared: _Watchdog | None = None

    def __init__(self):
        self.calls: dict[int, tuple[float, object]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="ort-call-watchdog").start()

    @classmethod
    def shared(cls) -> _Watchdog:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self.lock:
                for deadline, options in self.calls.values():
                    if now > deadline:
                        options.terminate = True

    @contextmanager
    def limit(self, seconds: float):
        import onnxruntime as ort

        options = ort.RunOptions()
        options.log_severity_level = 4  # a failed call becomes one UserError; ONNX Runtime's own log line would repeat it
        with self.lock:
            self.calls[id(options)] = (time.monotonic() + seconds, options)
        try:
            yield options
        finally:
            with self.lock:
                del self.calls[id(options)]


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtRuntime(Runtime):
    """ONNX Runtime with the CPU, CUDA or TensorRT execution provider (ONNX Runtime's execution-provider documentation)."""

    def __init__(self, path: str | Path | bytes, provider: str = "cpu", precision: str | None = None, cache_dir: str | Path | None = None,
                 threads: int | None = None, spin: bool = True, call_limit_s: float = CALL_LIMIT_S):  # fmt: skip
        """``path``: an ONNX file, or its bytes (with ``precision`` given). ``spin: False`` stops the
        threads from spinning between calls, for a runtime that shares the cores with other work
        (the INT8 teacher of a training step). A call running past ``call_limit_s`` is stopped.

        Raises:
            UserError: ONNX Runtime cannot load the graph (an operator it lacks, an invalid model).
        """
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
        self.source, self.call_limit_s = "the ONNX graph" if isinstance(path, bytes) else str(path), call_limit_s
        try:
            self.session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=providers)
        except Exception as e:  # ONNX Runtime's Fail / InvalidGraph / NotImplemented for graphs it cannot run
            raise UserError(f"ONNX Runtime cannot load {self.source}: {_ort_message(e)}; check the file with onnx.checker, "
                            "or export it again with standard operators") from None  # fmt: skip
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        # a graph exported with a fixed batch runs any batch in chunks of that size (the last one padded)
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) and first.shape[0] > 0 else None
        # a foreign graph may take float16 or float64 images; ours take float32
        self.input_dtype = {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(first.type, np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        n = self.fixed_batch
        if n is not None and len(batch) != n:
            chunks = []
            for i in range(0, len(batch), n):
                part = batch[i : i + n]
                chunks.append(self.run_all(np.concatenate([part, np.repeat(part[-1:], n - len(part), axis=0)]) if len(part) < n else part))
            return [np.concatenate([c[k] for c in chunks])[: len(batch)] for k in range(len(chunks[0]))]
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=self.input_dtype)}
        with _Watchdog.shared().limit(self.call_limit_s) as options:
            try:
                outs = self.session.run(None, feed, options)
            except Exception as e:
                if options.terminate:
                    raise UserError(f"one call of {self.source} on a batch of {len(batch)} ran past {self.call_limit_s:g} s and was "
                                    "stopped: a graph that does not end (a Loop whose condition never falls?), or raise the limit "
                                    "(compressor profile --call-timeout)") from None  # fmt: skip
                raise UserError(f"ONNX Runtime failed running {self.source} on a batch of shape {list(batch.shape)}: "
                                f"{_ort_message(e)}") from None  # fmt: skip
        return [o.astype(np.float32, copy=False) if o.dtype.kind == "f" else o for o in outs]


def _ort_message(e: Exception) -> str:
    """ONNX Runtime's error without its source-file prefix, on one line and short."""
    text = " ".join(str(e).split())
    text = text.split("failed:", 1)[-1].strip() if "failed:" in text else text
    return text[:400]
