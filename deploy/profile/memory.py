"""Peak memory while a backend runs: process RSS on CPU, the CUDA allocator and NVML on GPU."""

from __future__ import annotations

import os
import threading
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


class PeakMemory:
    """Context manager sampling RSS every ``interval`` s in a thread; on CUDA also the allocator's
    peak and NVML's device use. ``result`` holds MiB figures after exit."""

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device, self.interval = device, interval
        self.result: dict[str, Any] = {}
        self._stop = threading.Event()

    def __enter__(self):
        self.baseline = self.peak = current_rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        mib = 1 << 20
        self.result = {"rss_peak_mib": self.peak / mib, "rss_increase_mib": (self.peak - self.baseline) / mib}
        if self.device.startswith("cuda"):
            import torch

            self.result["cuda_allocator_peak_mib"] = torch.cuda.max_memory_allocated() / mib
            nvml = nvml_used()
            if nvml is not None:
                self.result["nvml_device_used_mib"] = nvml / mib
        return False


def nvml_used(index: int = 0) -> int | None:
    """Device memory in use (bytes) from NVML, or None without nvidia-ml-py / a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
    except pynvml.NVMLError:
        return None
