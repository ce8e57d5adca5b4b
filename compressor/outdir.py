"""Output folders: a command never replaces another run's files unasked, and two commands never
write one folder at once.

``claim(out, produces, ...)`` is entered by every command that writes a run (distill,
select-hints, export, profile, cross-distill, run, hevc convert) after its inputs are checked
and before its first write. It refuses a folder that is a file or cannot be written, refuses one
that already holds files this command would write (unless the user said ``--resume`` or
``--overwrite``), and takes a lock file; a lock left by a killed process (its pid no longer
runs on this host) is taken over. On failure a folder the claim created and left empty is
removed again, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .io import remove_stale_temps

LOCK = ".compressor.lock"
FRESH_LOCK_S = 10.0  # an unreadable lock younger than this is one being written, not a killed process's


@contextmanager
def claim(
    out: str | Path,
    produces: Sequence[str],
    command: str,
    resume: bool = False,
    overwrite: bool = False,
    reuse: bool = False,
    resumable: bool = False,
) -> Iterator[Path]:
    """Hold ``out`` for one command.

    Args:
        out: the output folder.
        produces: file names (globs allowed) the command writes; any of them present means the
            folder holds an earlier run.
        command: the command's name, for messages and the lock file.
        resume: the user continues the run in ``out`` (its files are expected).
        overwrite: the user replaces the run in ``out``.
        reuse: the command itself reuses what it finds (the pipeline's stage skipping).
        resumable: the command has ``--resume`` (the refusal then offers it).

    Raises:
        UserError: ``out`` is a file, cannot be created or written, holds an earlier run, or is
            locked by a running process.
    """
    if not str(out).strip():
        raise UserError(f"{command}: the output folder name is empty; name a folder (an empty name would write into the working directory)")
    out = Path(out)
    created = _create(out)
    try:
        _lock(out, command)
    except BaseException:
        _remove_if_empty(out, created)
        raise
    try:  # outputs are looked for under the lock: a run that just finished beside this one has written them
        _check_no_link_out(out)
        earlier = sorted({p.relative_to(out).as_posix() for pattern in produces for p in out.glob(pattern)})
        if earlier and not (resume or overwrite or reuse):
            shown = ", ".join(earlier[:5]) + (f" and {len(earlier) - 5} more" if len(earlier) > 5 else "")
            resume_hint = "--resume to continue it, " if resumable else ""
            raise UserError(
                f"{out} already holds an earlier {command} run ({shown}); nothing was changed. Pass {resume_hint}--overwrite "
                f"to replace it, or choose another --out"
            )
        remove_stale_temps(out)  # a process killed mid-write left them; the lock says none is writing now
    except BaseException:
        (out / LOCK).unlink(missing_ok=True)
        _remove_if_empty(out, created)
        raise
    try:
        yield out
    except BaseException:
        (out / LOCK).unlink(missing_ok=True)
        _remove_if_empty(out, created)
        raise
    (out / LOCK).unlink(missing_ok=True)


def _check_no_link_out(out: Path) -> None:
    """A command writes (and with --overwrite deletes) only inside ``out``: a symbolic link in it that
    leads out of it (``checkpoints -> /elsewhere``) would carry those writes outside."""
    root = out.resolve()
    for folder, dirs, files in os.walk(out):  # links are listed, not followed
        for name in (*dirs, *files):
            path = Path(folder) / name
            target = path.resolve() if path.is_symlink() else None
            if target is not None and not target.is_relative_to(root):
                raise UserError(f"{path} is a symbolic link to {target}, outside {out}: a command writes only inside its "
                                "--out, so nothing was changed. Replace the link by a copy, or choose another --out")  # fmt: skip


def _create(out: Path) -> list[Path]:
    """mkdir -p ``out``; returns the folders it made (to remove again if the command fails)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a folder")
    missing = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out}: {_reason(e)}; choose another --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"output folder {out} is not writable; choose another --out")
    return missing


def _lock(out: Path, command: str) -> None:
    path = out / LOCK
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None:
                raise UserError(
                    f"{out} is being written by another compressor {holder.get('command', '')} (pid {holder.get('pid')}, started "
                    f"{holder.get('started', '?')}); wait for it to finish or choose another --out"
                ) from None
            path.unlink(missing_ok=True)  # a killed process's lock: take it over
            continue
        except OSError as e:
            raise UserError(f"cannot write to output folder {out}: {_reason(e)}; choose another --out") from None
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
        except OSError as e:  # a full disk (ENOSPC) or quota: no empty lock may stay behind to block the next run
            path.unlink(missing_ok=True)
            raise UserError(f"cannot write to output folder {out}: {_reason(e)}; free some space or choose another --out") from None
        return
    raise UserError(f"{out}: could not take the lock {path}; remove it if no compressor command is running")


def _holder(path: Path) -> dict | None:
    """The lock's record if its process still runs (on this host), else None (stale)."""
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        try:  # unreadable: being written this instant (created, record not yet in), or a write cut short by a kill
            fresh = time.time() - path.stat().st_mtime < FRESH_LOCK_S
        except OSError:
            return None
        return {"command": "", "pid": "?", "started": "just now"} if fresh else None
    if record.get("host") != socket.gethostname():
        return record  # another machine's process on a shared folder: cannot tell, so respect it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return record  # alive, another user's
    return record


def _remove_if_empty(out: Path, created: list[Path]) -> None:
    for folder in created:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e)
