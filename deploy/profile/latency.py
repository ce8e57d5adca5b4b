"""Latency after warm-up, with the clock and the device synchronisation injected (timm's benchmark style)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

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


def interleaved_latency(
    configs: list[tuple[Hashable, Runtime, tuple[int, int, int], int]],
    iters: int = 50,
    rounds: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
    max_seconds: float = 20.0,
    settle: int = 3,
    pause: float = 0.05,
) -> dict[Hashable, dict[str, Any]]:
    """Time every configuration in ``rounds`` interleaved rounds, so that a burst of load on a
    shared machine hits all of them alike instead of whichever runs at that moment.

    Args:
        configs: ``(key, runtime, input (C, H, W), batch)``, already warmed up.
        iters: timed calls per configuration in all (split evenly over the rounds).
        rounds: each round runs every configuration once, starting one later than the last round.
        max_seconds: time budget per configuration; a round stops its calls after max_seconds / rounds
            (at least one call each round), as ``measure_latency`` bounds a slow model.
        settle: untimed calls that open each configuration's turn in a round. Switching backends
            is not free: the thread pool of the one before keeps spinning for a while (ONNX Runtime
            and OpenMP both spin-wait), and the next one's threads wake cold. On a 2-core machine the
            first call after a switch measured 2.4x (PyTorch after ONNX Runtime) and the next two
            1.8x (ONNX Runtime after PyTorch) their steady-state time; three untimed calls bring
            interleaved medians back to those of each runtime timed alone.
        pause: seconds of idle before each turn, so that the thread pools of the runtimes that ran
            before park. Two ONNX Runtime sessions in one process each keep a pool; without the
            pause, resnet20's batch-8 median was 5.8-6.9 ms in every round after the first (2.9 ms
            alone) once another session had run batch 32, settle calls or not; with 50 ms it was
            2.9 ms in every round.

    Returns:
        Per key, ``summarize``'s single-call figures plus ``round_median_ms`` (median of the rounds'
        medians), ``round_p10_ms`` / ``round_p90_ms`` and ``spread`` = (p90 - p10) / median of them.
    """
    if rounds < 1 or iters < 1:
        raise ValueError(f"rounds and iters must be >= 1, got {rounds}, {iters}")
    per_round = max(1, -(-iters // rounds))
    inputs = {key: np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32) for key, _, shape, batch in configs}
    samples: dict[Hashable, list[float]] = {key: [] for key, *_ in configs}
    medians: dict[Hashable, list[float]] = {key: [] for key, *_ in configs}
    for r in range(rounds):
        shift = r % max(len(configs), 1)
        for key, runtime, _, _ in configs[shift:] + configs[:shift]:
            times: list[float] = []
            time.sleep(pause)
            deadline = clock() + max_seconds / rounds
            for _ in range(settle):
                runtime(inputs[key])
            runtime.synchronize()
            while len(times) < per_round and (not times or clock() < deadline):
                start = clock()
                runtime(inputs[key])
                runtime.synchronize()
                times.append((clock() - start) * 1000.0)
            samples[key] += times
            medians[key].append(float(np.median(times)))
    out = {}
    for key, _, _, batch in configs:
        p10, p50, p90 = np.percentile(medians[key], [10, 50, 90])
        out[key] = {**summarize(samples[key], batch), "round_median_ms": float(p50), "round_p10_ms": float(p10), "round_p90_ms": float(p90),
                    "spread": float((p90 - p10) / p50) if p50 > 0 else 0.0, "rounds": rounds}  # fmt: skip
    return out


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
