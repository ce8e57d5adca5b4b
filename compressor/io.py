"""Atomic writes and file digests. Nothing half-written is ever left under a final name."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
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


MAX_TEXT_BYTES = 64 << 20  # a config, sidecar, plan or metrics file larger than this is not one


def read_text(path: str | os.PathLike, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """A text file the user named (``what``: "config file", "sidecar", ...), read only when it is a
    regular file of at most ``limit`` bytes: a FIFO would block for ever and /dev/zero never ends.

    Raises:
        UserError: missing, a folder, not a regular file, too large, unreadable or not UTF-8 (a BOM is allowed).
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path (relative paths start at {Path.cwd()})") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} {path} is a folder; give the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {path} is not a regular file (a FIFO, device or socket, which may never end); give a file")
    if info.st_size > limit:
        raise UserError(f"{what} {path} is {info.st_size >> 20} MiB; a {what} is at most {limit >> 20} MiB; give the right file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file the user named, through ``read_text``; malformed or absurdly nested JSON -> UserError."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}); re-create it or point at the right file") from None
    except RecursionError:
        raise UserError(f"{what} {path} nests its JSON deeper than any {what} does; re-create it or point at the right file") from None


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"
