"""The hint plan: what ``select-hints`` decided and why, as a versioned JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_json, read_json

SCHEMA = "edge-compressor/hint-plan"
VERSION = 1


@dataclass
class HintPlan:
    """Attributes are the plan's versioned JSON contract (README, Hint selection); indices are 1-based, as in the papers."""

    teacher_arch: str
    teacher_checkpoint: str | None
    teacher_digest: str | None
    num_classes: int
    data: str
    metric: str
    normalize: bool
    k: int
    samples: int
    position: str
    preact: bool
    candidates: list[str]
    candidate_stages: list[int]
    similarity: list[list[float]]
    labels: list[int]
    hints: list[int]
    hint_names: list[str]
    baseline_hints: list[int]
    seeds: list[int]
    iterations: int
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)
    tool_version: str = ""
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # a factory teacher's keyword arguments
    centroid: str = "kernel"  # k-means centroid reading: matrix (representation space) or kernel

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> HintPlan:
        path = Path(path)
        if not path.exists():
            raise UserError(f"hint plan {path} does not exist; make one with 'compressor select-hints'")
        obj = read_json(path, "hint plan")
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
            raise UserError(f"{path} is not a hint plan (schema {SCHEMA!r} expected)")
        if obj.get("version") != VERSION:
            raise UserError(f"hint plan {path} has version {obj.get('version')}; this tool reads version {VERSION}")
        fields = {k: v for k, v in obj.items() if k not in ("schema", "version")}
        try:
            return cls(**fields)
        except TypeError as e:
            raise UserError(f"hint plan {path} is missing or has unknown fields ({e})") from None
