"""``compressor ablate-hints --cross``: the hint-selection ablation for cross distillation.

The same plans as the distillation ablation (``compressor.hints.rules``), now choosing which of
the HEVC-domain teacher's backbone points the pixel-domain student is hinted at. Each (plan, seed)
is an ordinary ``cross-distill`` run in ``RUN/cells/<plan>/seed-<s>/`` with its teacher points
given (``hints.teacher_points``), scored by the task's metric (AP50 for detection, top-1 for
recognition). What all cells share is made once: the paired set (``RUN/data`` for a builtin
one), the teacher (trained in the first clustered cell, then loaded by every other cell) and the
clustered plan (selected in that cell). The vanilla row is each clustered cell's
``vanilla_student``, which starts from the same weights as its cross student.

Departure from ``cross-distill``'s pairing: there each teacher hint meets the student point in
the same stage, which would undo ``reverse``. Here, as in the distillation ablation, the student
keeps the same points in every plan, its deepest k stage ends (YOLOv3's detection scales for a
detector), and only the teacher side changes; the baseline plan is the teacher's deepest k stage
ends, the points ``cross-distill``'s baseline student uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressor.models.features import baseline_hints, hint_points

from ..config import save_config
from ..hints import HintPlan
from ..outdir import claim
from ..pipeline.ablation import PlanSet, ablation_report, plan_points, run_cells, write_tables
from .config import CrossConfig
from .data import PairedSet
from .run import prepare_data, run_cross_distill
from .tasks import TASKS


class CrossAblationConfig(PlanSet):
    cross: CrossConfig  # the scheme every cell runs (its out, seed, teacher_points and baseline_hints are set per cell)


def _student_points(c: CrossConfig, root: Path, k: int) -> tuple[list[int], int]:
    """The student's deepest k stage ends and its candidate count."""
    labels = root / "labels" if c.task == "detection" else None
    size = tuple(c.data.image_size)
    classes = PairedSet(root / "pixel", root / "hevc", "train", size, labels, c.data.num_classes).classes
    student = TASKS.get(c.task).build(c.student.arch, classes, size, c.student.kwargs, c.student.points)
    return baseline_hints(student)[-k:], len(hint_points(student))


def _cell(run: Path, base: CrossConfig, name: str, seed: int, updates: dict[str, Any], progress: bool) -> dict[str, Any]:
    """One cross-distill run, read back when finished, resumed when interrupted."""
    out = run / "cells" / name / f"seed-{seed}"
    if not (out / "report.json").exists():
        config = base.model_copy(deep=True, update={"out": str(out), "seed": seed, "baseline_hints": False})
        config.hints = config.hints.model_copy(update=updates.get("hints", {}))
        config.teacher = config.teacher.model_copy(update=updates.get("teacher", {}))
        config.vanilla = updates.get("vanilla", False)
        run_cross_distill(config, progress=progress, resume=(out / "config.yaml").exists())
    report = json.loads((out / "report.json").read_text())
    return {"report": report, "folder": str(out.relative_to(run)), "out": out}


def _score(cell: dict[str, Any], network: str, seed: int) -> dict[str, Any]:
    report = cell["report"]
    return {"seed": seed, "score": report["results"][network][report["metric"]], "seconds": report["timings"].get(f"{network}_s", 0.0),
            "folder": cell["folder"] + ("" if network == "cross_student" else f"#{network}")}  # fmt: skip


def run_cross_ablation(config: CrossAblationConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every (plan, seed) cell not yet finished and write ``table.json``, ``table.md`` and ``ablation.png``."""
    start = time.perf_counter()
    run, c = config.run_dir, config.cross
    with claim(run, [], "ablate-hints", reuse=True):
        save_config(config, run / "config.yaml")
        root = prepare_data(c, run, progress)  # a builtin set is made once, in RUN/data
        c = c.model_copy(deep=True, update={"data": c.data.model_copy(update={"root": str(root)})})
        s0 = config.seeds[0]
        k = c.hints.k
        student_points, n_student = _student_points(c, root, k)
        log(f"[cell 0] clustered, seed {s0}: teacher, hint selection{' and vanilla student' if config.vanilla else ''}")
        first_cell = _cell(run, c, "clustered", s0, {"hints": {"k": k, "student_points": student_points}, "vanilla": config.vanilla},
                           progress)  # fmt: skip
        plan = HintPlan.load(first_cell["out"] / "hints" / "plan.json")
        teacher = {"checkpoint": str(first_cell["out"] / "teacher.pt")}
        plans = plan_points(config, plan.hints, plan.baseline_hints[-k:], student_points, n_student, len(plan.candidates))
        clustered: dict[int, dict[str, Any]] = {s0: first_cell}

        def train(name: str, points: list[int], seed: int) -> dict[str, Any]:
            if name == "clustered" and seed in clustered:
                return _score(clustered[seed], "cross_student", seed)
            hints = {"k": k, "teacher_points": points, "student_points": student_points}
            cell = _cell(run, c, name, seed, {"hints": hints, "teacher": teacher, "vanilla": config.vanilla and name == "clustered"},
                         progress)  # fmt: skip
            if name == "clustered":
                clustered[seed] = cell
            return _score(cell, "cross_student", seed)

        vanilla = (lambda seed: _score(clustered[seed], "vanilla_student", seed)) if config.vanilla else None
        first, cells = run_cells(config, plans, train, vanilla, log)
        report0 = first_cell["report"]
        score = {"top1": "top-1 %"}.get(report0["metric"], f"{report0['metric']} %")
        header = {"teacher": c.teacher.arch, "student": c.student.arch, "method": f"cross {report0['hint_method']} ({c.task})",
                  "data": f"{root} ({c.teacher.domain} -> {c.student.domain})", "epochs": c.student.epochs, "k": k, "metric": plan.metric,
                  "candidates": len(plan.candidates), "score": score}  # fmt: skip
        report = ablation_report(config, header, plans, first, cells, time.perf_counter() - start)
        write_tables(run, report)
    return report
