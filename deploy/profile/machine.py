"""The machine a report was measured on: CPU, GPU, and the versions that matter."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from ..tensorrt.build import l4t_release

# L4T release -> JetPack (NVIDIA's JetPack release notes)
JETPACK = {"32.7": "4.6", "35.4": "5.1.2", "35.3": "5.1.1", "36.3": "6.0", "36.4": "6.1/6.2"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_governor() -> str | None:
    """cpufreq's scaling governor of CPU 0 (``performance``, ``powersave``, ...), None where the kernel does not expose it."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_governor": cpu_governor(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "edge-compressor")},
        "gpu": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "memory_mib": p.total_memory >> 20}
        info["versions"]["cuda"] = torch.version.cuda
    release = l4t_release()
    if release:
        info["l4t"] = release
        info["jetpack"] = JETPACK.get(".".join(release.split(".")[:2]))
    return info
