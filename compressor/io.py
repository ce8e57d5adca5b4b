"""Atomic writes and file digests. Nothing half-written is ever left under a final name."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import UserError

TEMP_MARK = "compressor-"  # in every temp file's name, so that only ours are ever cleaned up


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_MARK}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _out_of_space(e, path):
            raise UserError(
                f"no space left on the device writing {path}; free some space or choose another --out (nothing was replaced)"
            ) from None
        raise
    return path


def _out_of_space(e: BaseException, path: Path) -> bool:
    """ENOSPC, or torch.save's 'unexpected pos' when its zip writer hit a full disk."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    if isinstance(e, RuntimeError) and "unexpected pos" in str(e):
        return shutil.disk_usage(path.parent).free < 64 << 20
    return False


def remove_stale_temps(folder: Path) -> list[Path]:
    """Temp files of ``atomic_write`` left by a killed process in ``folder`` and its sub-folders (one level:
    checkpoints/, exports/); only call while holding the folder."""
    stale = [p for pattern in (f".*.{TEMP_MARK}*.tmp", f"*/.*.{TEMP_MARK}*.tmp") for p in folder.glob(pattern) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"
