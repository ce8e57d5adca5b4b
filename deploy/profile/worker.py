"""Memory of one (model, backend) measured in a fresh worker process.

The profiling process holds every model, export and runtime it has touched, so its resident
memory says nothing about one model. Each (model, backend) is therefore run again in its own
``spawn``-ed process: the libraries are imported, the resident set is read (the baseline), then the
model is loaded, its runtime built and each batch size run (warm-up and timed calls, as the latency
measurement does) while a sampler records the peak. The result per batch size is the peak it
added over the baseline and the absolute peak (and on CUDA the allocator's and NVML's figures).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable


def measure_memory(model: Path, backend: str, batches: list[int], warmup: int, iters: int, source: dict[str, Any] | None,
                   exports: dict[str, Path], export_dir: Path, timeout: float = 300.0) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{str(batch): {added_mib, peak_mib, baseline_mib, ...}}`` from a fresh process.

    Raises:
        BackendUnavailable: the worker could not build the backend (the message says why).
        RuntimeError: the worker died or timed out.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (
        str(model),
        backend,
        list(batches),
        warmup,
        iters,
        source or {},
        {k: str(v) for k, v in exports.items()},
        str(export_dir),
        queue,
    )
    proc = ctx.Process(target=_worker, args=args, daemon=True)
    proc.start()
    try:
        status, payload = queue.get(timeout=timeout)
    except Exception as e:  # queue.Empty on timeout, EOFError if the worker died
        proc.kill()
        raise RuntimeError(f"the memory worker for {backend} gave no result ({type(e).__name__}; exit code {proc.exitcode})") from None
    finally:
        proc.join(timeout=10)
    if status == "unavailable":
        raise BackendUnavailable(payload)
    if status != "ok":
        raise RuntimeError(f"the memory worker for {backend} failed: {payload}")
    return payload


def _worker(model: str, backend: str, batches: list[int], warmup: int, iters: int, source: dict, exports: dict, export_dir: str,
            queue) -> None:  # fmt: skip
    try:
        import numpy as np

        from ..artifact import load_artifact
        from .memory import PeakMemory, current_rss
        from .run import BACKENDS, Exports, ProfileOptions

        baseline = current_rss()
        art = load_artifact(model, **{k: v for k, v in source.items() if v is not None})
        holder = Exports(art, Path(export_dir), ProfileOptions(backends=[backend], progress=False))
        holder.files.update({k: Path(v) for k, v in exports.items()})
        out: dict[str, dict[str, float]] = {}
        with PeakMemory("cpu") as loading:
            runtime = BACKENDS.get(backend)(art, holder)
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, *art.input_size)).astype(np.float32)
            with PeakMemory(runtime.device) as mem:
                for _ in range(warmup + iters):
                    runtime(x)
                runtime.synchronize()
            peak = max(mem.peak, loading.peak)
            mib = 1 << 20
            out[str(batch)] = {"added_mib": (peak - baseline) / mib, "peak_mib": peak / mib, "baseline_mib": baseline / mib,
                               **{k: v for k, v in mem.result.items() if k.startswith(("cuda", "nvml"))}}  # fmt: skip
        queue.put(("ok", out))
    except BackendUnavailable as e:
        queue.put(("unavailable", str(e)))
    except BaseException as e:  # reported to the parent, which decides; nothing may hang the queue
        queue.put(("error", f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3).splitlines()[-1]}"))
