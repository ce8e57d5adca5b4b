"""Jetson telemetry: parse tegrastats lines of L4T R32, R35 and R36, integrate power into energy.

Formats (NVIDIA Jetson Linux Developer Guide, tegrastats): R32 prints unit-less rails ``POM_5V_IN 4523/3422`` (mW) and no
timestamp; R35/R36 start with ``MM-DD-YYYY HH:MM:SS``, R36 prints ``VDD_IN 4673mW/4673mW``.
``-256C`` means the sensor is off. RAM is shared by CPU and GPU. Total input power is VDD_IN
(Orin Nano/NX, Xavier NX) or POM_5V_IN (Nano); otherwise the sum of the rails (AGX Orin).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"SWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"CPU \[([^\]]*)\]")
_GPU = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+)\]?)?")
_EMC = re.compile(r"EMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(\w+)@(-?[\d.]+)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
_STAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)")
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class TegraSample:
    timestamp: str | None
    ram_used_mb: int | None
    ram_total_mb: int | None
    swap_used_mb: int | None
    cpu: list[tuple[int | None, int | None]]  # (load %, MHz) per core; (None, None) = core off
    gpu_load: int | None
    gpu_mhz: int | None
    emc_load: int | None
    temps_c: dict[str, float | None]  # None: sensor off (-256C)
    rails_mw: dict[str, tuple[int, int]]  # rail -> (current, average)
    total_power_mw: float | None = field(default=None)


def parse_line(line: str) -> TegraSample:
    """One tegrastats line -> TegraSample. Raises ValueError if it has no RAM field."""
    ram = _RAM.search(line)
    if not ram:
        raise ValueError(f"not a tegrastats line: {line[:80]!r}")
    swap = _SWAP.search(line)
    stamp = _STAMP.search(line)
    cpu: list[tuple[int | None, int | None]] = []
    if m := _CPU.search(line):
        for core in m.group(1).split(","):
            cm = re.match(r"\s*(\d+)%@(\d+)", core)
            cpu.append((int(cm.group(1)), int(cm.group(2))) if cm else (None, None))
    gpu = _GPU.search(line)
    emc = _EMC.search(line)
    temps = {name: (None if float(v) <= -256 else float(v)) for name, v in _TEMP.findall(line)}
    rails = {name: (int(cur), int(avg)) for name, cur, avg in _RAIL.findall(line) if name not in ("RAM", "SWAP", "IRAM")}
    total = next((float(rails[r][0]) for r in TOTAL_RAILS if r in rails), None)
    if total is None and rails:
        total = float(sum(cur for cur, _ in rails.values()))
    return TegraSample(
        stamp.group(1) if stamp else None,
        int(ram.group(1)),
        int(ram.group(2)),
        int(swap.group(1)) if swap else None,
        cpu,
        int(gpu.group(1)) if gpu else None,
        int(gpu.group(2)) if gpu and gpu.group(2) else None,
        int(emc.group(1)) if emc else None,
        temps,
        rails,
        total,
    )


def energy_mj(times_s: list[float], power_mw: list[float]) -> float:
    """Trapezoidal integral of power over time: mW x s = mJ."""
    if len(times_s) < 2:
        return 0.0
    return float(sum((t1 - t0) * (p0 + p1) / 2 for t0, t1, p0, p1 in zip(times_s, times_s[1:], power_mw, power_mw[1:], strict=False)))


class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` during a timed window (argument list, no shell)."""

    def __init__(self, interval_ms: int = 50, binary: str = "tegrastats"):
        self.interval_ms, self.binary = interval_ms, binary
        self.samples: list[tuple[float, TegraSample]] = []

    @staticmethod
    def available(binary: str = "tegrastats") -> bool:
        return shutil.which(binary) is not None

    def __enter__(self):
        self.proc = subprocess.Popen([self.binary, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((time.monotonic(), parse_line(line)))
            except ValueError:
                continue

    def __exit__(self, *exc) -> bool:
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.thread.join(timeout=5)
        return False

    def summary(self, inferences: int) -> dict[str, float]:
        """Mean power, energy over the window, energy per inference, peak shared RAM and how much
        it rose over the window (peak minus the first sample: what the timed calls added)."""
        points = [(t, s.total_power_mw) for t, s in self.samples if s.total_power_mw is not None]
        if len(points) < 2:
            return {}
        times, power = [t for t, _ in points], [p for _, p in points]
        energy = energy_mj(times, power)
        return {
            "mean_power_mw": sum(power) / len(power),
            "energy_mj": energy,
            "energy_per_inference_mj": energy / max(inferences, 1),
            "ram_peak_mb": max(s.ram_used_mb or 0 for _, s in self.samples),
            "ram_delta_mb": max(s.ram_used_mb or 0 for _, s in self.samples) - (self.samples[0][1].ram_used_mb or 0),
        }
