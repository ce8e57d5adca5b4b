"""Which device ``auto`` means, and whether a named one can be used here."""

import torch

from .errors import UserError


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
