"""Runtime latency: ONNX Runtime vs PyTorch eager vs torch.compile, and INT8 vs fp32 on ONNX Runtime.

    python tools/bench_runtime.py [--rounds 7] [--iters 20]

1. resnet8x4 at 32x32, batch 1: ORT CPU fp32 vs PyTorch eager vs torch.compile (target: ORT <= 0.6x eager).
2. resnet32x4 at 32x32, batch 32: ORT INT8 (Q/DQ, per-channel, calibrated on synthetic data)
   vs ORT fp32 (target: INT8 <= 0.6x fp32).
All runtimes go through the toolchain's own export and runtime code. Each is warmed up, then
the runtimes of a comparison are timed interleaved, round after round, and the median of the
per-round medians is reported (these shared machines drift).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from compressor.deploy.export.int8 import quantize_qdq
from compressor.deploy.export.onnx_export import export_onnx
from compressor.deploy.runtime.ort_runtime import OrtRuntime
from compressor.deploy.runtime.torch_runtime import TorchRuntime
from compressor.models import create_model


def interleaved(runtimes: dict[str, object], x: np.ndarray, rounds: int, iters: int, warmup: int = 5) -> dict[str, float]:
    """Median latency (ms) per runtime over ``rounds`` interleaved rounds of ``iters`` calls."""
    for rt in runtimes.values():
        for _ in range(warmup):
            rt(x)
    per_round: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(rounds):
        for name, rt in runtimes.items():
            samples = []
            for _ in range(iters):
                start = time.perf_counter()
                rt(x)
                samples.append((time.perf_counter() - start) * 1000)
            per_round[name].append(statistics.median(samples))
    return {name: statistics.median(v) for name, v in per_round.items()}


def calibration(n: int, batch: int = 32):
    g = np.random.default_rng(1)
    for _ in range(n):
        yield g.standard_normal((batch, 3, 32, 32)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads; {args.rounds} interleaved rounds x {args.iters} calls")
    with tempfile.TemporaryDirectory() as tmp:
        small = create_model("resnet8x4").eval()
        export_onnx(small, Path(tmp) / "r8x4.onnx", (32, 32))
        x1 = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        rts = {"pytorch eager": TorchRuntime(small), "torch.compile": TorchRuntime(create_model("resnet8x4").eval(), compile_model=True),
               "onnxruntime cpu fp32": OrtRuntime(Path(tmp) / "r8x4.onnx")}  # fmt: skip
        rts["torch.compile"].model.load_state_dict(small.state_dict())
        ms = interleaved(rts, x1, args.rounds, args.iters)
        eager = ms["pytorch eager"]
        print("\n1. resnet8x4, 32x32, batch 1 (median ms per call)")
        for name, v in ms.items():
            print(f"   {name:24s} {v:8.3f} ms   {v / eager:5.2f}x eager")
        print(f"   target: ORT fp32 <= 0.6x eager -> {'met' if ms['onnxruntime cpu fp32'] <= 0.6 * eager else 'NOT met'}")

        big = create_model("resnet32x4").eval()
        export_onnx(big, Path(tmp) / "r32x4.onnx", (32, 32))
        quantize_qdq(Path(tmp) / "r32x4.onnx", Path(tmp) / "r32x4.int8.onnx", calibration(8))
        x32 = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
        rts = {
            "onnxruntime fp32": OrtRuntime(Path(tmp) / "r32x4.onnx"),
            "onnxruntime int8 (Q/DQ)": OrtRuntime(Path(tmp) / "r32x4.int8.onnx"),
        }
        ms = interleaved(rts, x32, args.rounds, max(3, args.iters // 4))
        fp32 = ms["onnxruntime fp32"]
        print("\n2. resnet32x4, 32x32, batch 32 (median ms per call)")
        for name, v in ms.items():
            print(f"   {name:24s} {v:8.3f} ms   {v / fp32:5.2f}x fp32")
        print(f"   target: INT8 <= 0.6x fp32 -> {'met' if ms['onnxruntime int8 (Q/DQ)'] <= 0.6 * fp32 else 'NOT met'}")


if __name__ == "__main__":
    main()
