"""Recipes: a paper's table as one YAML, run with repeated seeds, written in the table's layout.

A table recipe (``compressor/pipeline/recipes/*.yaml``; ``compressor run RECIPE --set
data=cifar100:PATH``) names its rows (teacher, student, optionally a dataset and the score shown:
top-1 or top-5) and its columns (a distillation method with its settings and where the hints
sit: the baseline stage ends or the points PURSUhInT proposes; ``ce`` is the vanilla student,
``teacher: true`` the teacher's own score), with the paper's figure for every cell. Every
teacher is trained once per dataset (or taken from ``teachers.<arch>.checkpoint``), hint plans
are selected once per teacher, and every cell is a distillation run per seed in
``RUN/cells/<row>/<column>/seed-<s>/`` (resumable; a finished cell is not redone). ``table.md``
and ``table.json`` put the paper's figure beside ours (mean ± sample std over the seeds).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import Strict, parse_overrides, read_yaml, resolve_paths, save_config, set_dotted, validate
from ..data import DATASETS, parse_spec
from ..errors import UserError
from ..hints import HintConfig, select_hints
from ..io import atomic_write_json, atomic_write_text
from ..losses import online_method
from ..outdir import claim
from .config import Recipe
from .run import train_network

SCHEMA = "edge-compressor/table"


class TableInfo(Strict):
    title: str
    source: str  # the paper and table number
    score: Literal["accuracy", "error"] = "accuracy"  # error: 100 - accuracy, as ImageNet tables print it
    take: Literal["final", "best"] = "final"  # the last epoch's score (the papers' "last epoch") or the best epoch's top-1
    layout: Literal["rows", "columns"] = "rows"  # columns: methods down the side, pairs across (the paper's orientation)
    notes: list[str] = Field(default_factory=list)


class TeacherEntry(Strict):
    checkpoint: str | None = None  # an existing teacher; else trained with teacher_recipe
    metric: str = "cka"  # PURSUhInT's similarity for this teacher's proposed hints (the papers pick per teacher)
    undermine: bool = False  # make it "undistillable": self-undermining KD from the normal teacher (thesis 000 ch. 4)


class Column(Strict):
    name: str
    method: str = "ce"  # 'ce': the vanilla student
    hints: Literal["baseline", "proposed"] = "baseline"  # stage ends, or the points PURSUhInT selects on the teacher
    teacher: bool = False  # the teacher's own score (nothing trained for this column)
    ensemble: bool = False  # the averager's multi-exit ensemble top-1 ("-Ens"; needs params.averager.exits)
    result: Literal["teacher", "vanilla_student", "cross_student"] | None = None  # cross tables: which network's score
    gamma: float | None = None
    weights: dict[str, float] = Field(default_factory=dict)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    init_epochs: int = Field(0, ge=0)


class Row(Strict):
    teacher: str
    student: str
    data: str | None = None  # a key of ``datasets``: another dataset than the table's (e.g. EKD's Table 5.2 rows)
    score: Literal["top1", "top5"] = "top1"
    lr: float | None = Field(None, gt=0)  # the student's learning rate when it differs (RepDistiller: 0.01 for ShuffleNet / MobileNet)
    set: dict[str, Any] = Field(default_factory=dict)  # cross tables: values of the cross-distillation config for this row
    paper: list[float | None]  # the paper's figure per column (null: not reported / n/a)


class TableConfig(Strict):
    table: TableInfo
    name: str = Field("table", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    out: str = "runs"
    data: str = "synthetic"  # the train spec (--set data=cifar100:PATH)
    eval: str | None = None
    datasets: dict[str, str] = Field(default_factory=dict)  # more specs by name, for rows with ``data`` (--set datasets.cifar10=...)
    device: str = "auto"
    workers: int = Field(0, ge=0)
    seeds: list[int] = Field(default_factory=lambda: [0])
    teachers: dict[str, TeacherEntry] = Field(default_factory=dict)
    teacher_recipe: Recipe = Field(default_factory=Recipe)
    student_recipe: Recipe = Field(default_factory=Recipe)
    hints: HintConfig = Field(default_factory=HintConfig)  # hint selection (the metric per teacher: teachers.<arch>.metric)
    cross: str | None = None  # cross tables: a cross-distillation config (a YAML file, or 'detection' / 'recognition' for the examples)
    cross_set: dict[str, Any] = Field(default_factory=dict)  # values of the cross-distillation config for every row
    columns: list[Column]
    rows: list[Row]

    @model_validator(mode="after")
    def _shape(self):
        for i, row in enumerate(self.rows):
            if len(row.paper) != len(self.columns):
                raise ValueError(f"rows[{i}].paper has {len(row.paper)} figures for {len(self.columns)} columns")
            if any(c.ensemble for c in self.columns) and row.score != "top1":
                raise ValueError(f"rows[{i}]: an ensemble column reports top-1 only, not {row.score}")
            if row.data is not None and row.data not in self.datasets:
                raise ValueError(f"rows[{i}].data {row.data!r} is not a key of datasets ({', '.join(self.datasets) or 'none'})")
        if self.cross is not None and any(c.result is None for c in self.columns):
            raise ValueError("a cross table's columns each name a result: teacher, vanilla_student or cross_student")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


def is_table(tree: dict[str, Any]) -> bool:
    return isinstance(tree, dict) and "table" in tree and "rows" in tree


def load_table_config(path: str | Path, overrides: list[str] = (), seeds: list[int] | None = None) -> TableConfig:
    tree = read_yaml(path)
    resolve_paths(tree, ("out",), Path(path).resolve().parent)
    for key, value in parse_overrides(overrides):
        set_dotted(tree, key, value)
    if seeds is not None:
        tree["seeds"] = seeds
    for entry in (tree.get("teachers") or {}).values():
        if isinstance(entry, dict) and entry.get("checkpoint"):
            entry["checkpoint"] = str((Path.cwd() / entry["checkpoint"]).resolve())
    config = validate(TableConfig, tree, f"table recipe {path}")
    _check_names(config)
    return config


def _check_names(c: TableConfig) -> None:
    from compressor.models import ModelReferenceError, check_reference

    from ..hints.similarity import METRICS
    from ..losses import LOSSES

    problems = []
    for spec in {c.data, c.eval, *c.datasets.values()} - {None}:
        if parse_spec(spec)[0] not in DATASETS:
            problems.append(f"  data: {DATASETS.unknown_message(parse_spec(spec)[0])}")
    for i, row in enumerate(c.rows):
        for key in ("teacher", "student"):
            try:
                check_reference(getattr(row, key))
            except ModelReferenceError as e:
                problems.append(f"  rows[{i}].{key}: {e}")
    for j, col in enumerate(c.columns):
        problems += [f"  columns[{j}].method: {LOSSES.unknown_message(n)}" for n in col.method.split("+") if n != "ce" and n not in LOSSES]
    for arch, entry in c.teachers.items():
        if entry.metric not in METRICS:
            problems.append(f"  teachers.{arch}.metric: {METRICS.unknown_message(entry.metric)}")
        if entry.checkpoint and not Path(entry.checkpoint).is_file():
            problems.append(f"  teachers.{arch}.checkpoint: {entry.checkpoint} does not exist")
    if problems:
        raise UserError("invalid table recipe:\n" + "\n".join(problems))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "x"


class TableRun:
    """The folders and trained pieces of one table run (teachers and plans are shared by cells)."""

    def __init__(self, config: TableConfig, progress: bool, log: Callable[[str], None]):
        self.c, self.progress, self.log = config, progress, log
        self.run = config.run_dir
        self.teachers: dict[tuple[str, str], Path] = {}
        self.plans: dict[tuple[str, str], Path] = {}

    def data(self, row: Row) -> tuple[str, str | None]:
        return (self.c.datasets[row.data], None) if row.data else (self.c.data, self.c.eval)

    def train(self, out: Path, name: str, flags: dict[str, Any], recipe: Recipe, data: tuple[str, str | None], seed: int) -> dict:
        return train_network(out, name, flags, recipe, data[0], data[1], self.c.workers, seed, self.c.device, self.progress, self.log)

    def teacher(self, row: Row) -> Path:
        data = self.data(row)
        key = (row.teacher, data[0])
        if key not in self.teachers:
            entry = self.c.teachers.get(row.teacher, TeacherEntry())
            if entry.checkpoint:
                self.teachers[key] = Path(entry.checkpoint)
            else:
                out = self.run / "teachers" / _slug(f"{row.teacher}-{data[0]}")
                self.log(f"[teacher] {row.teacher} on {data[0]}")
                self.train(out, "teacher", {"student.arch": row.teacher, "loss.method": "ce"}, self.c.teacher_recipe, data, self.c.seeds[0])
                self.teachers[key] = out / "teacher.pt"
                if entry.undermine:  # the nasty teacher: same architecture, trained to be undistillable from the normal one
                    flags = {"student.arch": row.teacher, "loss.method": "undermine", "teacher.checkpoint": str(out / "teacher.pt"),
                             "teacher.arch": row.teacher}  # fmt: skip
                    self.log(f"[teacher] undistillable {row.teacher} (self-undermining KD)")
                    self.train(out.with_name(out.name + "-undermined"), "teacher", flags, self.c.teacher_recipe, data, self.c.seeds[0])
                    self.teachers[key] = out.with_name(out.name + "-undermined") / "teacher.pt"
        return self.teachers[key]

    def plan(self, row: Row) -> Path:
        data = self.data(row)
        key = (row.teacher, data[0])
        if key not in self.plans:
            entry = self.c.teachers.get(row.teacher, TeacherEntry())
            out = self.run / "hints" / _slug(f"{row.teacher}-{data[0]}")
            if not (out / "plan.json").exists():
                config = self.c.hints.model_copy(update={"metric": entry.metric, "seed": self.c.seeds[0]})
                select_hints(self.teacher(row), data[0], out, config, arch=row.teacher, progress=self.progress, overwrite=True)
            self.plans[key] = out / "plan.json"
        return self.plans[key]

    def cross_cell(self, i: int, row: Row, col: Column) -> list[dict[str, float]]:
        """A cross-distillation row runs once per seed (teacher, vanilla and cross student together); the
        teacher is trained with the first seed and reused, as the thesis scores students over three runs."""
        from ..config import load_config
        from ..crossdistill import CrossConfig, run_cross_distill
        from ..crossdistill.config import EXAMPLES, PATH_KEYS, REF_KEYS

        base = EXAMPLES / f"{self.c.cross}.example.yaml" if self.c.cross in ("detection", "recognition") else Path(self.c.cross)
        scores, first = [], None
        for seed in self.c.seeds:
            out = self.run / "cells" / _slug(f"{i + 1}-{row.teacher}-{row.student}") / f"seed-{seed}"
            if not (out / "report.json").exists():
                values = {"teacher.arch": row.teacher, "student.arch": row.student, "seed": seed, **self.c.cross_set, **row.set}
                if first is not None:
                    values.update({"teacher.checkpoint": str(first / "teacher.pt")})
                config = load_config(CrossConfig, base, {"out": str(out), **values}, [], PATH_KEYS, "cross-distillation config", REF_KEYS)
                if config.data.builtin and not config.data.root:  # one generated (and HEVC-converted) set for every cell
                    config.data.root = str(self.run / f"data-{config.data.builtin}")
                self.log(f"[cell] cross distillation {row.teacher} -> {row.student}, seed {seed}")
                run_cross_distill(config, progress=self.progress)
            report = json.loads((out / "report.json").read_text())
            scores.append({"top1": report["results"][col.result][report["metric"]]})
            scores[-1]["best_top1"] = scores[-1]["top1"]
            first = first or out
        return scores

    def cell(self, i: int, row: Row, col: Column) -> list[dict[str, float]]:
        """The column's scores for the row, one per seed."""
        if self.c.cross is not None:
            return self.cross_cell(i, row, col)
        teacher = self.teacher(row)
        if col.teacher:
            return [_teacher_scores(teacher, row.teacher, self.data(row))]
        flags: dict[str, Any] = {"student.arch": row.student, "loss.method": col.method, "train.init_epochs": col.init_epochs,
                                 "loss.params": col.params, "loss.weights": col.weights}  # fmt: skip
        if col.gamma is not None:
            flags["loss.gamma"] = col.gamma
        if col.method != "ce" and online_method(col.method) is None:  # DML / ONE train their own cohort, no teacher
            flags.update({"teacher.checkpoint": str(teacher), "teacher.arch": row.teacher})
            if col.hints == "proposed":
                flags["hints.plan"] = str(self.plan(row))
        scores = []
        for seed in self.c.seeds:
            out = self.run / "cells" / _slug(f"{i + 1}-{row.teacher}-{row.student}") / _slug(col.name) / f"seed-{seed}"
            self.log(f"[cell] {row.teacher} -> {row.student}, {col.name}, seed {seed}")
            recipe = self.c.student_recipe if row.lr is None else self.c.student_recipe.model_copy(update={"lr": row.lr})
            summary = self.train(out, "student", flags, recipe, self.data(row), seed)
            scores.append({**summary["final"], "best_top1": summary["best_top1"]})
            if col.ensemble:  # the mean of the student's exits, reported beside the student (losses/averager.py)
                import torch

                ens = torch.load(out / "averager_exits.pt", weights_only=True)["report"]["ensemble_top1"]
                scores[-1] = {"top1": ens, "best_top1": ens}
        return scores


def _teacher_scores(path: Path, arch: str, data: tuple[str, str | None]) -> dict[str, float]:
    """A teacher's top-1 / top-5 on the eval split: its sidecar's when it has one, else evaluated here."""
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        final = (json.loads(sidecar.read_text()).get("metrics") or {}).get("final")
        if final:
            return {**final, "best_top1": final["top1"]}
    import torch

    from ..checkpoint import load_checkpoint
    from ..data import open_dataset
    from ..distributed import World
    from ..train.parts import evaluate

    eval_set = open_dataset(data[1] or data[0], "test")
    model = load_checkpoint(path, arch=arch, num_classes=eval_set.info.num_classes).model
    final = evaluate(model, eval_set, 256, 0, torch.device("cpu"), World())
    return {**final, "best_top1": final["top1"]}


def _value(scores: dict[str, float], row: Row, info: TableInfo) -> float:
    top = scores["best_top1"] if row.score == "top1" and info.take == "best" else scores[row.score]
    return 100.0 - top if info.score == "error" else top


def run_table(config: TableConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every cell of the table (skipping finished ones) and write ``table.md`` / ``table.json``."""
    with claim(config.run_dir, [], "run", reuse=True):
        save_config(config, config.run_dir / "config.yaml")
        t = TableRun(config, progress, log)
        cells = []
        for i, row in enumerate(config.rows):
            for col, paper in zip(config.columns, row.paper, strict=True):
                values = [_value(s, row, config.table) for s in t.cell(i, row, col)]
                cells.append({"row": i, "column": col.name, "paper": paper, "ours": values, **_mean_std(values)})
        report = {"schema": SCHEMA, "version": 1, **config.table.model_dump(), "data": config.data, "datasets": config.datasets,
                  "seeds": config.seeds,
                  "columns": [c.name for c in config.columns], "rows": [r.model_dump() for r in config.rows], "cells": cells}  # fmt: skip
        atomic_write_json(config.run_dir / "table.json", report)
        atomic_write_text(config.run_dir / "table.md", table_markdown(report))
    return report


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def table_markdown(report: dict[str, Any]) -> str:
    """The paper's layout: one line per row, one column per method, "paper / ours" in each cell."""
    n = len(report["seeds"])
    unit = "error (%)" if report["score"] == "error" else "accuracy (%)"
    seeds = f"mean ± std over {n} seeds" if n > 1 else "one seed"
    lines = [f"# {report['title']}", "", f"{report['source']}. Each cell: the paper's figure / ours, {unit}, {seeds} "
             f"({report['take']} epoch); data {report['data']}.", ""]  # fmt: skip
    lines += [f"- {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    grid = {(c["row"], c["column"]): _cell_text(c) for c in report["cells"]}
    names = [_row_name(r) for r in report["rows"]]
    if report["layout"] == "columns":  # methods down the side, teacher -> student pairs across
        lines += ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {col} | " + " | ".join(grid[(i, col)] for i in range(len(names))) + " |" for col in report["columns"]]
    else:
        lines += ["| teacher -> student | " + " | ".join(report["columns"]) + " |", "|---|" + "---|" * len(report["columns"])]
        lines += [f"| {name} | " + " | ".join(grid[(i, col)] for col in report["columns"]) + " |" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def _row_name(row: dict[str, Any]) -> str:
    data = f" ({row['data']})" if row.get("data") else ""
    settings = f" ({', '.join(f'{k} {v}' for k, v in row['set'].items())})" if row.get("set") else ""
    return f"{row['teacher']}{data} -> {row['student']}{settings}{' top-5' if row['score'] == 'top5' else ''}"


def _cell_text(cell: dict[str, Any]) -> str:
    paper = "-" if cell["paper"] is None else f"{cell['paper']:.2f}"
    return f"{paper} / {cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["std"] is not None else "")
