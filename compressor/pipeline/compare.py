"""The run's comparisons: did distillation beat the same student alone, did the chosen hints beat
the stage ends? ``compare/compare.json`` holds each comparison's per-seed top-1 beside the
distilled student's and the paired difference (``compressor.evidence``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evidence import paired_difference
from ..hints import HintPlan
from ..io import atomic_write_json
from ..losses import needs_hints
from .config import PipelineConfig

SCHEMA = "edge-compressor/compare"


def comparison_plan(c: PipelineConfig, plan_path: Path | None) -> dict[str, str | None]:
    """Each wanted comparison -> None (it is trained) or why it is not (it would repeat the distilled run)."""
    out: dict[str, str | None] = {}
    for name in c.compare:
        why = None
        if name == "baseline-hints":
            if not needs_hints(c.distill.loss.method):
                why = f"{c.distill.loss.method} has no hint term"
            elif plan_path is None:
                why = "hint selection is off: the distilled student already uses the stage-end hints"
            else:
                plan = HintPlan.load(plan_path)
                if list(plan.hints) == list(plan.baseline_hints):
                    why = f"the clustering chose the stage ends {plan.hints}: the distilled student is the baseline-hints run"
        out[name] = why
    return out


def _top1(folder: Path) -> dict[str, Any] | None:
    try:
        side = json.loads((folder / "student.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {"top1": side["metrics"]["final"]["top1"], "init_digest": side.get("made_by", {}).get("init_digest"),
            "weights": str(folder / "student.pt")}  # fmt: skip


def _per_seed(root: Path, seeds: list[int]) -> list[dict[str, Any] | None]:
    return [_top1(root if i == 0 else root / "seeds" / f"seed-{s}") for i, s in enumerate(seeds)]


def write_comparison(run: Path, c: PipelineConfig, plan: dict[str, str | None]) -> dict[str, Any]:
    """``compare/compare.json`` from the finished runs under ``distill/`` and ``compare/``."""
    seeds = c.seeds or [c.seed]
    distilled = _per_seed(run / "distill", seeds)
    base = [r["top1"] for r in distilled]
    report: dict[str, Any] = {"schema": SCHEMA, "version": 1, "seeds": seeds, "student": c.distill.student,
                              "method": c.distill.loss.method, "distill": distilled, "comparisons": {}}  # fmt: skip
    for name, why in plan.items():
        if why is not None:
            report["comparisons"][name] = {"trained": False, "reason": why}
            continue
        runs = _per_seed(run / "compare" / name, seeds)
        same_start = all(r["init_digest"] == d["init_digest"] for r, d in zip(runs, distilled, strict=True))
        report["comparisons"][name] = {"trained": True, "runs": runs, "same_initial_weights": same_start,
                                       # distilled minus this, seed by seed: > 0 means distillation (or the chosen hints) helped
                                       "distill_minus_this": paired_difference(base, [r["top1"] for r in runs])}  # fmt: skip
    atomic_write_json(run / "compare" / "compare.json", report)
    return report
