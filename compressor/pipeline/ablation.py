"""``compressor ablate-hints``: does clustering pick better hints than the simple rules?

One teacher -> student pair is distilled with several hint plans, each over the same seeds
(``compressor.hints.rules``: clustered, baseline, uniform, forward, reverse, random draws, and
plan files of the user's), and optionally trained alone (``vanilla``). Each (plan, seed) is an
ordinary resumable distillation in ``RUN/cells/<plan>/seed-<s>/``; a finished cell is never
redone, and plans that pick the same teacher points share their cells. ``table.json`` /
``table.md`` give each plan's mean +- std and its paired difference from ``clustered`` with a
95 % t interval (``compressor.evidence``); ``ablation.png`` draws both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from compressor.models import build_model
from compressor.models.features import baseline_hints, hint_points

from ..config import Strict, load_config, save_config
from ..data import open_dataset
from ..errors import UserError
from ..evidence import describe_difference, mean_std, paired_difference
from ..hints import HintConfig, HintPlan, select_hints
from ..hints.rules import RULES, rule_points
from ..io import atomic_write, atomic_write_json, atomic_write_text, read_json
from ..losses import needs_hints
from ..outdir import claim
from ..train.artifacts import read_metrics
from ..train.config import DataSource
from .config import DistillSpec, Recipe, TeacherSpec
from .run import train_network

SCHEMA = "edge-compressor/hint-ablation"


class PlanSet(Strict):
    """What an ablation compares, for distillation and cross distillation alike."""

    name: str = Field("ablate-hints", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # one folder under out
    out: str = "runs"
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])  # every plan is trained once per seed
    plans: list[str] = Field(default_factory=lambda: list(RULES))  # rules of compressor.hints.rules
    random_draws: int = Field(3, ge=1)  # the random rule's draws (each its own plan, summarised as one row)
    plan_files: dict[str, str] = Field(default_factory=dict)  # more plans by name: a plan.json or a JSON list of teacher points
    vanilla: bool = True  # also the student trained alone (CE), for scale: do hints help at all?

    @field_validator("plans")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in RULES]
        if unknown:
            raise ValueError(f"unknown plan rule(s) {unknown}; known: {', '.join(RULES)} (plan files go under plan_files)")
        if "clustered" not in v:
            raise ValueError("plans must include 'clustered': every other plan is compared with it")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _seeds_and_names(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and not empty, got {self.seeds}")
        clash = set(self.plan_files) & (set(RULES) | {"vanilla"})
        if clash:
            raise ValueError(f"plan_files names {sorted(clash)} are taken by the built-in plans; rename them")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    def check_plan_files(self) -> None:
        for name, file in self.plan_files.items():
            if not Path(file).is_file():
                raise UserError(f"plan_files.{name}: {file} does not exist")


class AblationConfig(PlanSet):
    device: str = "auto"
    data: DataSource = Field(default_factory=DataSource)
    teacher: TeacherSpec
    hints: HintConfig = Field(default_factory=HintConfig)  # how the clustered plan is selected (once, with the first seed)
    distill: DistillSpec


PATH_KEYS = ("teacher.checkpoint", "out")
REF_KEYS = ("teacher.arch", "distill.student")


def load_ablation_config(path: str | Path | None, flags: dict[str, Any] | None = None, overrides: list[str] = ()) -> AblationConfig:
    config = load_config(AblationConfig, path, flags, overrides, PATH_KEYS, "hint ablation config", REF_KEYS)
    if not needs_hints(config.distill.loss.method):
        raise UserError(f"distill.loss.method {config.distill.loss.method!r} has no hint term, so hint plans cannot differ; "
                        "use a method with one (at, fitnet, at+kd, fitnet+kd, cc, ...)")  # fmt: skip
    base = Path(path).resolve().parent if path else Path.cwd()
    config.plan_files = {n: str((base / p).resolve()) for n, p in config.plan_files.items()}
    config.check_plan_files()
    return config


def read_plan_file(path: str | Path) -> list[int]:
    """Teacher points from a ``select-hints`` plan (its ``hints``), a JSON list, or ``{"teacher": [...]}``."""
    obj = read_json(path, "plan file")
    if isinstance(obj, dict) and "hints" in obj and "schema" in obj:
        return list(HintPlan.load(path).hints)
    points = obj.get("teacher") if isinstance(obj, dict) else obj
    if not isinstance(points, list) or not points or not all(isinstance(p, int) and not isinstance(p, bool) for p in points):
        raise UserError(f'plan file {path}: expected a list of 1-based teacher points such as [4, 11, 17], or {{"teacher": [...]}}')
    return points


class Ablation:
    """The folders and shared pieces of one ablation run."""

    def __init__(self, config: AblationConfig, progress: bool, log: Callable[[str], None]):
        self.c, self.progress, self.log, self.run = config, progress, log, config.run_dir

    def train(self, out: Path, flags: dict[str, Any], recipe: Recipe, seed: int, name: str = "student") -> dict[str, Any]:
        c = self.c
        return train_network(out, name, flags, recipe, c.data.train, c.data.eval, c.data.workers, seed, c.device, self.progress, self.log)

    def teacher(self) -> Path:
        t = self.c.teacher
        if t.checkpoint is not None:
            return Path(t.checkpoint)
        out = self.run / "teacher"
        if not (out / "teacher.pt").exists():
            self.log(f"[teacher] {t.arch}, seed {self.c.seeds[0]}")
        flags = {"student.arch": t.arch, "student.kwargs": t.kwargs, "student.points": t.points, "loss.method": "ce"}
        self.train(out, flags, t.recipe, self.c.seeds[0], name="teacher")
        return out / "teacher.pt"

    def clustered(self, teacher: Path) -> HintPlan:
        out = self.run / "hints"
        if not (out / "plan.json").exists():
            self.log("[hints] selecting the clustered plan")
            t = self.c.teacher
            arch = t.arch if t.checkpoint is None or t.arch else None
            select_hints(teacher, self.c.data.train, out, self.c.hints.model_copy(update={"seed": self.c.seeds[0]}), arch=arch,
                         trusted=t.trusted, progress=self.progress, kwargs=t.kwargs or None, points=t.points, overwrite=True)  # fmt: skip
        return HintPlan.load(out / "plan.json")

    def student_points(self) -> tuple[list[int], int]:
        """The student's hint points (its stage ends) and how many candidates it has."""
        d = self.c.distill
        info = open_dataset(self.c.data.train, "train").info
        model = build_model(d.student, info.num_classes, d.student_kwargs or None, tuple(info.input_size), d.student_points)
        return baseline_hints(model), len(hint_points(model))

    def cell(self, folder: str, flags: dict[str, Any], seed: int) -> dict[str, Any]:
        out = self.run / "cells" / folder / f"seed-{seed}"
        summary = self.train(out, flags, self.c.distill.recipe, seed)
        seconds = sum(r.get("train", {}).get("seconds", 0.0) for r in read_metrics(out / "metrics.jsonl"))
        return {"seed": seed, "score": summary["final"]["top1"], "top1": summary["final"]["top1"], "best_top1": summary["best_top1"],
                "seconds": round(seconds, 1), "folder": str(out.relative_to(self.run))}  # fmt: skip


def plan_points(c: PlanSet, clustered: list[int], baseline: list[int], student_points: list[int], n_student: int,
                n_teacher: int) -> dict[str, list[int]]:  # fmt: skip
    """Every plan's teacher points, in the order of the table (random draws as ``random-<d>``)."""
    common = {"clustered": clustered, "baseline": baseline, "student_points": student_points, "n_student": n_student,
              "n_teacher": n_teacher}  # fmt: skip
    out: dict[str, list[int]] = {}
    try:
        for rule in c.plans:
            if rule == "random":
                out.update({f"random-{d}": rule_points(rule, draw=d, **common) for d in range(1, c.random_draws + 1)})
            else:
                out[rule] = rule_points(rule, **common)
    except ValueError as e:
        raise UserError(f"hint plans: {e}") from None
    for name, file in c.plan_files.items():
        points = read_plan_file(file)
        if len(points) != len(student_points) or not all(1 <= p <= n_teacher for p in points):
            raise UserError(f"plan_files.{name}: {points} must be {len(student_points)} teacher points (one per student point "
                            f"{student_points}) within 1..{n_teacher}")  # fmt: skip
        out[name] = points
    return out


def run_cells(c: PlanSet, plans: dict[str, list[int]], train: Callable[[str, list[int], int], dict[str, Any]],
              vanilla: Callable[[int], dict[str, Any]] | None, log: Callable[[str], None],
              ) -> tuple[dict[tuple[int, ...], str], dict[str, list[dict[str, Any]]]]:  # fmt: skip
    """Every (plan, seed) cell by ``train(plan, points, seed)``, plans with the same points once, then
    ``vanilla(seed)``. Returns the plan owning each set of points and each plan's cells."""
    first: dict[tuple[int, ...], str] = {}  # teacher points -> the plan whose cells hold them
    cells: dict[str, list[dict[str, Any]]] = {}
    total = len(c.seeds) * (len(set(map(tuple, plans.values()))) + (vanilla is not None))
    done = 0
    for name, points in plans.items():
        owner = first.setdefault(tuple(points), name)
        if owner != name:
            cells[name] = cells[owner]
            continue
        cells[name] = []
        for seed in c.seeds:
            done += 1
            log(f"[cell {done}/{total}] {name} (teacher points {points}), seed {seed}")
            cells[name].append(train(name, points, seed))
    if vanilla is not None:
        cells["vanilla"] = []
        for seed in c.seeds:
            done += 1
            log(f"[cell {done}/{total}] vanilla (the student alone), seed {seed}")
            cells["vanilla"].append(vanilla(seed))
    return first, cells


def write_tables(run: Path, report: dict[str, Any]) -> None:
    atomic_write_json(run / "table.json", report)
    atomic_write_text(run / "table.md", ablation_markdown(report))
    atomic_write(run / "ablation.png", lambda f: f.write(plot_ablation(report)))


def _distill_flags(c: AblationConfig, teacher: Path, points: list[int], preact: bool) -> dict[str, Any]:
    d = c.distill
    return {"teacher.checkpoint": str(teacher), "teacher.arch": c.teacher.arch, "teacher.trusted": c.teacher.trusted,
            "teacher.kwargs": c.teacher.kwargs, "teacher.points": c.teacher.points, "student.arch": d.student,
            "student.kwargs": d.student_kwargs, "student.points": d.student_points, "hints.teacher": points, "hints.preact": preact,
            "loss": d.loss.model_dump(), "train.init_epochs": d.init_epochs}  # fmt: skip


def run_ablation(config: AblationConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every (plan, seed) cell not yet finished and write ``table.json``, ``table.md`` and ``ablation.png``."""
    start = time.perf_counter()
    with claim(config.run_dir, [], "ablate-hints", reuse=True):
        save_config(config, config.run_dir / "config.yaml")
        a = Ablation(config, progress, log)
        teacher = a.teacher()
        plan = a.clustered(teacher)
        plans = plan_points(config, plan.hints, plan.baseline_hints, *a.student_points(), len(plan.candidates))
        d = config.distill
        alone = {"student.arch": d.student, "student.kwargs": d.student_kwargs, "student.points": d.student_points, "loss.method": "ce"}

        def distilled(name: str, points: list[int], seed: int) -> dict[str, Any]:
            return a.cell(name, _distill_flags(config, teacher, points, plan.preact), seed)

        first, cells = run_cells(config, plans, distilled, (lambda seed: a.cell("vanilla", alone, seed)) if config.vanilla else None, log)
        header = {"teacher": plan.teacher_arch, "student": d.student, "method": d.loss.method, "data": config.data.train,
                  "epochs": d.recipe.epochs, "k": plan.k, "metric": plan.metric, "candidates": len(plan.candidates),
                  "score": "top-1 %"}  # fmt: skip
        report = ablation_report(config, header, plans, first, cells, time.perf_counter() - start)
        write_tables(config.run_dir, report)
    return report


def _row(name: str, scores: list[float], reference: list[float], points: list[int] | None, same_as: str | None,
         members: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    diff = None if name == "clustered" else paired_difference(scores, reference)
    return {"plan": name, "teacher_points": points, "same_as": same_as, "members": members, "scores": scores, **mean_std(scores),
            "vs_clustered": diff}  # fmt: skip


def ablation_report(config: PlanSet, header: dict[str, Any], plans: dict[str, list[int]], first: dict[tuple[int, ...], str],
                    cells: dict[str, list[dict[str, Any]]], seconds: float) -> dict[str, Any]:  # fmt: skip
    """Rows in the order of ``config.plans`` (random draws summarised in one row, each draw below it);
    ``header``: teacher, student, method, data, epochs, k, metric, candidates and the score's name."""
    ref = [c["score"] for c in cells["clustered"]]
    rows, draws = [], []
    for name in [*config.plans, *config.plan_files]:
        if name == "random":
            members = [n for n in plans if n.startswith("random-")]
            per_seed = [sum(cells[m][i]["score"] for m in members) / len(members) for i in range(len(config.seeds))]
            rows.append(_row(f"random (mean of {len(members)} draw{'s' if len(members) > 1 else ''})", per_seed, ref, None, None, members))
            for m in members:
                owner = first[tuple(plans[m])]
                draws.append(_row(m, [c["score"] for c in cells[m]], ref, plans[m], owner if owner != m else None))
            continue
        owner = first[tuple(plans[name])]
        rows.append(_row(name, [c["score"] for c in cells[name]], ref, plans[name], owner if owner != name else None))
    if "vanilla" in cells:
        rows.append(_row("vanilla", [c["score"] for c in cells["vanilla"]], ref, None, None))
    trained = {c["folder"]: c["seconds"] for group in cells.values() for c in group}
    return {"schema": SCHEMA, "version": 1, **header, "seeds": config.seeds, "rows": rows, "random_draws": draws,
            "compute": {"cells": len(trained), "training_seconds": round(sum(trained.values()), 1), "wall_seconds": round(seconds, 1)},
            "cells": {name: group for name, group in cells.items()}}  # fmt: skip


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "(reference)"
    if d["low"] is None:
        return f"{d['mean']:+.2f} (one seed)"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _fmt_score(r: dict[str, Any]) -> str:
    return f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")


def ablation_markdown(report: dict[str, Any]) -> str:
    n, epochs = len(report["seeds"]), report["epochs"]
    lines = [f"# Hint selection ablation: {report['teacher']} -> {report['student']}, {report['method']}", "",
             f"Data {report['data']}; {epochs} epoch{'s' if epochs != 1 else ''}; seeds {', '.join(map(str, report['seeds']))}; "
             f"k = {report['k']} of "
             f"{report['candidates']} teacher candidates; clustered by {report['metric']}. Scores: {report['score']} at the last epoch, "
             f"mean ± sample std over {n} seed{'s' if n > 1 else ''}; the difference from clustered is paired by seed, with its "
             f"95% t interval in brackets.", "",
             f"| plan | teacher points | {report['score']} | vs clustered | per seed |", "|---|---|---|---|---|"]  # fmt: skip
    for r in report["rows"]:
        points = ", ".join(map(str, r["teacher_points"])) if r["teacher_points"] else ("-" if r["members"] is None else "see below")
        same = f" (= {r['same_as']})" if r["same_as"] else ""
        lines.append(f"| {r['plan']} | {points}{same} | {_fmt_score(r)} | {_fmt_diff(r['vs_clustered'])} | "
                     f"{', '.join(f'{s:.2f}' for s in r['scores'])} |")  # fmt: skip
    if report["random_draws"]:
        lines += ["", "Random draws:", "", f"| draw | teacher points | {report['score']} | vs clustered |", "|---|---|---|---|"]
        for r in report["random_draws"]:
            same = f" (= {r['same_as']})" if r["same_as"] else ""
            points = ", ".join(map(str, r["teacher_points"]))
            lines.append(f"| {r['plan']} | {points}{same} | {_fmt_score(r)} | {_fmt_diff(r['vs_clustered'])} |")
    cost = report["compute"]
    lines += ["", verdict(report), "", f"Compute: {cost['cells']} trainings, {cost['training_seconds']:.0f} s of training, "
              f"{cost['wall_seconds']:.0f} s wall clock for this call (finished cells are read, not redone)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def verdict(report: dict[str, Any]) -> str:
    """One sentence: does clustering beat each alternative beyond seed noise?"""
    better, worse, tied = [], [], []
    for r in report["rows"]:
        d = r["vs_clustered"]
        if d is None or r["same_as"] == "clustered":
            continue
        if d["low"] is None:
            tied.append(r["plan"])
        elif d["high"] < 0:
            better.append(r["plan"])  # the alternative scored below clustered
        elif d["low"] > 0:
            worse.append(r["plan"])
        else:
            tied.append(r["plan"])
    parts = []
    if better:
        parts.append(f"clustered beats {', '.join(better)} beyond seed noise")
    if worse:
        parts.append(f"{', '.join(worse)} beat{'s' if len(worse) == 1 else ''} clustered beyond seed noise")
    if tied:
        parts.append(f"clustered and {', '.join(tied)} are not told apart by these seeds")
    example = next((r for r in report["rows"] if r["vs_clustered"] is not None and r["plan"] != "vanilla"), None)
    unit = report["score"].removesuffix(" %")
    tail = f" (e.g. {example['plan']}: {describe_difference(example['vs_clustered'], unit)})" if example else ""
    return ("Verdict: " + "; ".join(parts) + tail + ".") if parts else "Verdict: only the clustered plan was trained."


def plot_ablation(report: dict[str, Any]) -> bytes:
    """Left: each plan's top-1 per seed (dots) and mean (bar). Right: the paired difference from
    clustered with its 95% interval; a plan whose interval misses 0 differs beyond seed noise."""
    import io

    from matplotlib.figure import Figure

    rows = report["rows"]
    fig = Figure(figsize=(10, 0.45 * len(rows) + 1.8))
    left, right = fig.subplots(1, 2, sharey=True)
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows, strict=True):
        left.scatter(r["scores"], [y] * len(r["scores"]), color="#888", s=18, zorder=3, label="one seed" if y == ys[0] else None)
        left.plot([r["mean"]], [y], marker="|", markersize=18, color="#1f77b4", mew=2.5, label="mean" if y == ys[0] else None)
        d = r["vs_clustered"]
        if d is not None:
            color = "#2a7" if d["low"] is not None and d["low"] > 0 else ("#c33" if d["high"] is not None and d["high"] < 0 else "#555")
            if d["low"] is not None:
                right.plot([d["low"], d["high"]], [y, y], color=color, lw=2.5)
            right.plot([d["mean"]], [y], "o", color=color)
    right.axvline(0, color="#000", lw=0.8)
    left.set_yticks(ys, [r["plan"] for r in rows])
    left.set(xlabel=f"{report['score']} (last epoch)", title=f"{report['teacher']} -> {report['student']}, {report['method']}")
    right.set(xlabel="minus clustered, paired by seed (points)", title="difference from clustered (95% interval)")
    left.legend(fontsize=8, loc="lower left")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
