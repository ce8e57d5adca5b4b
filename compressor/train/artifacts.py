"""What a distillation run writes: the resumable training state and the clean student artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..io import atomic_write, atomic_write_json, atomic_write_text, file_digest, read_text

STATE_VERSION = 1


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"version": STATE_VERSION, **state}, f))


def load_state(path: Path) -> dict[str, Any]:
    """Our own training state: tensors, numbers and strings only, so ``weights_only=True`` holds."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--resume: no checkpoint at {path}; start without --resume") from None
    except Exception as e:  # a truncated or foreign file: say which and how to proceed
        raise UserError(f"--resume: {path} is not a readable training checkpoint ({type(e).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise UserError(f"--resume: {path} was not written by this version of the engine")
    return state


def resume_state(out: Path, fingerprint: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``--resume``: the last checkpoint of ``out`` (refused if it belongs to another run) and
    the metrics rows up to its epoch."""
    path = out / "checkpoints" / "last.pt"
    state = load_state(path)
    if state.get("fingerprint") != fingerprint:
        raise UserError(f"--resume: {path} belongs to a run with another student, method, hints, data or seed")
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["epoch"] <= int(state["epoch"])]
    return state, rows


def save_student(out: Path, student: nn.Module, sidecar: dict[str, Any], name: str = "student") -> tuple[Path, Path]:
    """``<name>.pt`` (the trained model's plain state_dict, nothing else) and ``<name>.json``."""
    weights = out / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    atomic_write(weights, lambda f: torch.save(state, f))
    meta = {**sidecar, "weights": weights.name, "digest": file_digest(weights)}
    return weights, atomic_write_json(out / f"{name}.json", meta)


def rewrite_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.jsonl, one JSON object per epoch; rewritten whole (atomically) each epoch."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Epoch rows; a line that is not a JSON object (a file cut short or edited by hand) -> UserError naming it."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(read_text(path, "metrics file").splitlines(), start=1):
        try:
            row = json.loads(line) if line.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            row = None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {n}, is not a JSON object of epoch metrics; delete that line (or the file) and run again")
        if row:
            rows.append(row)
    return rows


def finished_run(out: Path, name: str) -> dict[str, Any] | None:
    """The summary of a run whose artifact is complete (weights matching the sidecar's digest), else None."""
    weights, sidecar = out / f"{name}.pt", out / f"{name}.json"
    try:
        meta = json.loads(sidecar.read_text())
        final = meta["metrics"]["final"]
        intact = weights.is_file() and meta.get("digest") == file_digest(weights)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not intact:
        return None
    return {"final": final, "best_top1": meta["metrics"].get("best_top1"), "epochs": meta["made_by"].get("epochs"), "weights": str(weights),
            "sidecar": str(sidecar), "metrics": str(out / "metrics.jsonl"), "ranks_identical": True, "complete": True}  # fmt: skip
