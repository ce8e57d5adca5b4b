"""Which device ``auto`` means, and whether a named one can be used here."""

import os

import torch

from .errors import UserError

ACTIVATIONS_PER_INPUT = 8  # a conv net holds several input-sized activations at once; the estimate is a floor


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping (Linux MemAvailable), None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_input_fits(batch: int, size: tuple[int, int], what: str, fix: str) -> None:
    """Refuse, before anything is allocated, a batch of (batch, 3, H, W) float32 images whose
    activations cannot fit in this machine's free memory (a 10^6-pixel side, a batch of 10^9).

    Raises:
        UserError: the estimate (``ACTIVATIONS_PER_INPUT`` times the input) exceeds the free memory.
    """
    input_bytes = batch * 3 * int(size[0]) * int(size[1]) * 4
    free = available_memory()
    if free is not None and input_bytes * ACTIVATIONS_PER_INPUT > free:
        raise UserError(f"{what}: a batch of {batch} at {size[0]}x{size[1]} needs at least {_gib(input_bytes * ACTIVATIONS_PER_INPUT)} "
                        f"(the input alone is {_gib(input_bytes)}), more than the {_gib(free)} free on this machine; {fix}")  # fmt: skip


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, key: str = "--device") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device this machine has.

    Raises:
        UserError: an unknown device name, or CUDA asked for where there is none (or not that many).
    """
    if name == "auto":
        name = default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{key} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"{key} {name!r}: this tool runs on cpu or cuda (cuda:N); use auto to take what is there")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{key} {name!r}: no CUDA device is available on this machine; use cpu (or auto)")
        if (device.index or 0) >= count:
            raise UserError(f"{key} {name!r}: this machine has {count} CUDA device(s), numbered 0 to {count - 1}")
    return device
