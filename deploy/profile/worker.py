"""Memory of one (model, backend) measured in a fresh worker process.

The profiling process holds every model, export and runtime it has touched, so its resident
memory says nothing about one model. Each (model, backend) is therefore run again in its own
fresh Python process: the libraries are imported, the resident set is read (the baseline), then the
model is loaded, its runtime built and each batch size run (warm-up and timed calls, as the latency
measurement does) while a sampler records the peak. The result per batch size is the peak it
added over the baseline and the absolute peak (and on CUDA the allocator's and NVML's figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable


def measure_memory(model: Path, backend: str, batches: list[int], warmup: int, iters: int, source: dict[str, Any] | None,
                   exports: dict[str, Path], export_dir: Path, timeout: float = 300.0) -> dict[str, dict[str, float]]:  # fmt: skip
    """``{str(batch): {added_mib, peak_mib, baseline_mib, ...}}`` from a fresh interpreter.

    The worker is ``python -m compressor.deploy.profile.worker`` rather than a multiprocessing child:
    a spawned child re-imports the caller's main module, which re-runs a user's script that calls the
    Python API without an ``if __name__ == "__main__"`` guard.

    Raises:
        BackendUnavailable: the worker could not build the backend (the message says why).
        RuntimeError: the worker failed or timed out.
    """
    request = {"model": str(model), "backend": backend, "batches": list(batches), "warmup": warmup, "iters": iters,
               "source": source or {}, "exports": {k: str(v) for k, v in exports.items()}, "export_dir": str(export_dir)}  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the memory worker for {backend} took over {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    try:
        status, payload = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"the memory worker for {backend} exited {done.returncode} without a result: {tail}") from None
    if status == "unavailable":
        raise BackendUnavailable(payload)
    if status != "ok":
        raise RuntimeError(f"the memory worker for {backend} failed: {payload}")
    return payload


def _measure(request: dict[str, Any]) -> dict[str, dict[str, float]]:
    import numpy as np

    from ..artifact import load_artifact
    from .backends import BACKENDS, Exports, ProfileOptions
    from .memory import PeakMemory, current_rss

    baseline = current_rss()
    source = {k: (tuple(v) if isinstance(v, list) else v) for k, v in request["source"].items() if v is not None}
    art = load_artifact(request["model"], **source)
    holder = Exports(art, Path(request["export_dir"]), ProfileOptions(backends=[request["backend"]], progress=False))
    holder.files.update({k: Path(v) for k, v in request["exports"].items()})
    with PeakMemory("cpu") as loading:
        runtime = BACKENDS.get(request["backend"])(art, holder)
    out: dict[str, dict[str, float]] = {}
    mib = 1 << 20
    for batch in request["batches"]:
        x = np.random.default_rng(0).standard_normal((batch, 3, *art.input_size)).astype(np.float32)
        with PeakMemory(runtime.device) as mem:
            for _ in range(request["warmup"] + request["iters"]):
                runtime(x)
            runtime.synchronize()
        peak = max(mem.peak, loading.peak)
        out[str(batch)] = {"added_mib": (peak - baseline) / mib, "peak_mib": peak / mib, "baseline_mib": baseline / mib,
                           **{k: v for k, v in mem.result.items() if k.startswith(("cuda", "nvml"))}}  # fmt: skip
    return out


def main() -> None:
    """Read one request (JSON) on stdin, print ``[status, payload]`` as the last stdout line."""
    try:
        result = ["ok", _measure(json.loads(sys.stdin.read()))]
    except BackendUnavailable as e:
        result = ["unavailable", str(e)]
    except Exception as e:  # reported to the parent, which falls back to the in-process figure with a note
        result = ["error", f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3).splitlines()[-1]}"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
