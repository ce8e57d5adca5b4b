"""Latency after warm-up, with the clock and the device synchronisation injected (timm's benchmark style)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..runtime.base import Runtime


def measure_latency(
    runtime: Runtime,
    input_shape: tuple[int, int, int],
    batch: int,
    warmup: int = 10,
    iters: int = 50,
    max_seconds: float = 20.0,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
) -> dict[str, float | list[float]]:
    """Time ``iters`` calls (fewer if ``max_seconds`` runs out, at least 5) after ``warmup`` calls.

    Returns:
        ``{batch, p50_ms, p90_ms, p99_ms, mean_ms, std_ms, throughput (images/s), iters, samples_ms}``.
    """
    if batch < 1 or iters < 1:
        raise ValueError(f"batch and iters must be >= 1, got {batch}, {iters}")
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape)).astype(np.float32)
    for _ in range(warmup):
        runtime(x)
    runtime.synchronize()
    samples = []
    deadline = clock() + max_seconds
    while len(samples) < iters and (len(samples) < 5 or clock() < deadline):
        start = clock()
        runtime(x)
        runtime.synchronize()
        samples.append((clock() - start) * 1000.0)
    return summarize(samples, batch)


def summarize(samples_ms: list[float], batch: int) -> dict[str, float | list[float]]:
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "batch": batch,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
        "throughput": float(batch * 1000.0 / a.mean()),
        "iters": len(a),
        "samples_ms": [round(float(v), 4) for v in a],
    }
