"""``run_pipeline``: teacher -> hints -> distill -> export -> profile in one run folder.

The pipeline only coordinates: each stage calls the library function of its command. A stage
records the digest of its inputs (its config section and the digests of the files it reads) and
of its outputs in ``<stage>/stage.json``; when both still match, the stage is skipped. An
interrupted distillation resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import save_config
from ..errors import UserError
from ..hints import HintConfig, select_hints
from ..io import atomic_write_json, file_digest
from ..outdir import claim
from ..report import write_run_report
from ..train import distill, load_distill_config
from ..train.artifacts import load_state
from ..train.parts import state_fingerprint
from .config import PipelineConfig, Recipe

STAGES = ("teacher", "hints", "distill", "compare", "export", "profile")


@dataclass
class Context:
    config: PipelineConfig
    run: Path
    force_from: int  # index into STAGES: stages from here on are redone
    progress: bool
    digests: dict[str, str] = field(default_factory=dict)  # upstream outputs, by name
    paths: dict[str, Path] = field(default_factory=dict)
    log: Callable[[str], None] = print


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _cached(stage_dir: Path, inputs: str, outputs: list[Path]) -> bool:
    record = stage_dir / "stage.json"
    if not record.exists() or not all(p.exists() for p in outputs):
        return False
    try:
        saved = json.loads(record.read_text())
    except json.JSONDecodeError:
        return False
    return saved.get("inputs") == inputs and all(saved.get("outputs", {}).get(_key(stage_dir, p)) == file_digest(p) for p in outputs)


def _key(stage_dir: Path, output: Path) -> str:
    """An output's name in ``stage.json``: its path from the stage folder (compare has one
    ``student.pt`` per comparison; a bare file name would let the last overwrite the others)."""
    return os.path.relpath(output, stage_dir)


def _record(stage_dir: Path, inputs: str, outputs: list[Path], seconds: float) -> None:
    atomic_write_json(stage_dir / "stage.json", {"inputs": inputs, "outputs": {_key(stage_dir, p): file_digest(p) for p in outputs},
                                                 "seconds": round(seconds, 2)})  # fmt: skip


def _stage(ctx: Context, name: str, inputs: str, outputs: list[Path], work: Callable[[], None]) -> None:
    stage_dir = ctx.run / name
    if STAGES.index(name) < ctx.force_from and _cached(stage_dir, inputs, outputs):
        ctx.log(f"[{name}] unchanged, skipped")
        return
    ctx.log(f"[{name}] running")
    start = time.perf_counter()
    work()
    _record(stage_dir, inputs, outputs, time.perf_counter() - start)
    ctx.log(f"[{name}] done in {time.perf_counter() - start:.1f} s")


def train_network(out: Path, name: str, flags: dict[str, Any], recipe: Recipe, train: str, eval_spec: str | None, workers: int, seed: int,
                  device: str, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """One distillation (or plain training) run into ``out``: resumed when ``out`` holds a run of the
    same config (a finished one is returned as it is), replaced when its inputs changed."""
    flags = {**flags, "out": str(out), "name": name, "data.train": train, "data.eval": eval_spec, "data.workers": workers,
             "data.batch_size": recipe.batch_size, "data.augment": recipe.augment, "train.seed": seed, "train.device": device,
             "train.epochs": recipe.epochs}  # fmt: skip
    config = load_distill_config(None, flags).model_copy(update={"optim": recipe.optim})  # the recipe's typed optimiser section
    state = out / "checkpoints" / "last.pt"
    resume = state.exists() and load_state(state).get("fingerprint") == state_fingerprint(config)
    if resume:
        log(f"  resuming from {state}")
    return distill(config, resume=resume, progress=progress, overwrite=not resume)  # the stage's inputs changed: redo


def _train(ctx: Context, out: Path, name: str, flags: dict[str, Any], recipe: Recipe) -> None:
    c = ctx.config
    train_network(out, name, flags, recipe, c.data.train, c.data.eval, c.data.workers, c.seed, c.device, ctx.progress, ctx.log)


def stage_teacher(ctx: Context) -> None:
    t = ctx.config.teacher
    if t.checkpoint is not None:
        ctx.paths["teacher"] = Path(t.checkpoint)
        ctx.digests["teacher"] = file_digest(t.checkpoint)
        ctx.log(f"[teacher] given: {t.checkpoint}")
        return
    out = ctx.run / "teacher"
    weights = out / "teacher.pt"
    inputs = _digest(t.model_dump(), ctx.config.data.model_dump(), ctx.config.seed)
    flags = {"student.arch": t.arch, "student.kwargs": t.kwargs, "student.points": t.points, "loss.method": "ce"}
    work = lambda: _train(ctx, out, "teacher", flags, t.recipe)  # noqa: E731
    _stage(ctx, "teacher", inputs, [weights], work)
    ctx.paths["teacher"], ctx.digests["teacher"] = weights, file_digest(weights)


def stage_hints(ctx: Context) -> None:
    h, c = ctx.config.hints, ctx.config
    if not h.enabled:
        ctx.log("[hints] disabled: baseline (stage-end) hints")
        return
    plan = ctx.run / "hints" / "plan.json"
    inputs = _digest(h.model_dump(), c.data.train, ctx.digests["teacher"], c.seed)
    config = HintConfig(**h.model_dump(exclude={"enabled"}) | {"seed": c.seed})
    arch = c.teacher.arch if c.teacher.checkpoint is None or c.teacher.arch else None
    work = lambda: select_hints(ctx.paths["teacher"], c.data.train, plan.parent, config, arch=arch,  # noqa: E731
                                trusted=c.teacher.trusted, progress=ctx.progress, kwargs=c.teacher.kwargs or None,
                                points=c.teacher.points, overwrite=True)  # fmt: skip
    _stage(ctx, "hints", inputs, [plan, plan.parent / "similarity.png"], work)
    ctx.paths["plan"], ctx.digests["plan"] = plan, file_digest(plan)


def stage_distill(ctx: Context) -> None:
    d, c = ctx.config.distill, ctx.config
    out = ctx.run / "distill"
    weights = out / "student.pt"
    inputs = _digest(d.model_dump(), c.data.model_dump(), c.seeds or c.seed, ctx.digests["teacher"], ctx.digests.get("plan"))
    flags = _distill_flags(ctx)
    if not c.seeds:
        _stage(ctx, "distill", inputs, [weights, out / "student.json"], lambda: _train(ctx, out, "student", flags, d.recipe))
    else:
        _stage(ctx, "distill", inputs, [weights, out / "student.json", out / "seeds.json"], lambda: _train_seeds(ctx, out, flags, d.recipe))
    ctx.paths["student"], ctx.digests["student"] = weights, file_digest(weights)


def _distill_flags(ctx: Context) -> dict[str, Any]:
    d, c = ctx.config.distill, ctx.config
    return {"teacher.checkpoint": str(ctx.paths["teacher"]), "teacher.arch": c.teacher.arch, "teacher.trusted": c.teacher.trusted,
            "teacher.kwargs": c.teacher.kwargs, "teacher.points": c.teacher.points, "student.arch": d.student,
            "student.kwargs": d.student_kwargs, "student.points": d.student_points,
            "hints.plan": str(ctx.paths["plan"]) if "plan" in ctx.paths else None,
            "loss": d.loss.model_dump(), "train.init_epochs": d.init_epochs}  # fmt: skip


def stage_compare(ctx: Context) -> None:
    """The same student alone (``vanilla``: CE only) and with the teacher's stage-end hints
    (``baseline-hints``), each from the distilled student's seed(s) and recipe, so the report can say
    whether distillation and the chosen hints helped (``compare/compare.json``)."""
    from ..evidence import better_than_distilled
    from .compare import comparison_plan, write_comparison

    c = ctx.config
    out = ctx.run / "compare"
    plan = comparison_plan(c, ctx.paths.get("plan"))
    if not c.compare:
        ctx.log("[compare] compare: [] (nothing trained beside the student)")
        return
    inputs = _digest(c.compare, c.distill.model_dump(), c.data.model_dump(), c.seeds or c.seed, ctx.digests["teacher"],
                     ctx.digests.get("plan"))  # fmt: skip
    trained = [name for name, why in plan.items() if why is None]
    outputs = [out / name / "student.pt" for name in trained] + [out / "compare.json"]
    d = c.distill
    alone = {"student.arch": d.student, "student.kwargs": d.student_kwargs, "student.points": d.student_points, "loss.method": "ce"}
    flags = {"vanilla": alone,
             "baseline-hints": {**_distill_flags(ctx), "hints.plan": None, "hints.teacher": "baseline"}}  # fmt: skip

    def work() -> None:
        for name in trained:
            for i, seed in enumerate(c.seeds or [c.seed]):
                folder = out / name if i == 0 else out / name / "seeds" / f"seed-{seed}"
                ctx.log(f"  {name}, seed {seed}")
                train_network(folder, "student", flags[name], d.recipe, c.data.train, c.data.eval, c.data.workers, seed, c.device,
                              ctx.progress, ctx.log)  # fmt: skip
        write_comparison(ctx.run, c, plan)

    _stage(ctx, "compare", inputs, outputs, work)
    winner = better_than_distilled(json.loads((out / "compare.json").read_text()))
    if winner is not None:  # what to deploy is the better student: export and profile take it in the distilled one's place
        weights = out / winner / "student.pt"
        ctx.paths["student"], ctx.digests["student"] = weights, file_digest(weights)
        ctx.log(f"[compare] the {winner} student beat the distilled one beyond seed noise: it is exported and profiled in its place")


def _train_seeds(ctx: Context, out: Path, flags: dict[str, Any], recipe: Recipe) -> None:
    """The student once per seed: the first is the run's student (exported and profiled), the others
    go to ``distill/seeds/seed-<s>/``; ``distill/seeds.json`` / ``seeds.md`` hold mean ± std."""
    from ..train.repeat import write_seeds

    c, runs = ctx.config, []
    for i, seed in enumerate(c.seeds):
        folder = out if i == 0 else out / "seeds" / f"seed-{seed}"
        ctx.log(f"  seed {seed}")
        summary = train_network(folder, "student", flags, recipe, c.data.train, c.data.eval, c.data.workers, seed, c.device, ctx.progress,
                                ctx.log)  # fmt: skip
        runs.append(
            {"seed": seed, "final_top1": summary["final"]["top1"], "best_top1": summary["best_top1"], "weights": summary["weights"]}
        )
    write_seeds(out, c.distill.loss.method, c.distill.student, c.data.train, runs)


def stage_export(ctx: Context) -> None:
    from compressor.deploy.artifact import load_artifact
    from compressor.deploy.export import ExportOptions, export_artifact, wanted_formats

    e, c = ctx.config.export, ctx.config
    out = ctx.run / "export"
    options = ExportOptions(**e.model_dump() | {"calib": e.calib or c.data.train})  # the stage's section is export's own
    outputs = [f.path(out, "student") for f in wanted_formats(options) if f.name != "trt"]  # a plan is named by its GPU
    inputs = _digest(e.model_dump(), c.data.train, ctx.digests["student"])

    def work() -> None:
        # the config names the student: its own factory, never one read from a sidecar
        result = export_artifact(load_artifact(ctx.paths["student"], arch=c.distill.student), out, options, stem="student")
        if "int8" in result.info:
            q = result.info["int8"]
            ctx.log(f"  INT8 top-1 {q['fp32_top1']:.2f}% -> {q['int8_top1']:.2f}% (agreement {q['top1_agreement']:.1f}%)")

    _stage(ctx, "export", inputs, outputs, work)
    ctx.paths.update({f.name: f.path(out, "student") for f in wanted_formats(options) if f.name in ("onnx", "int8")})


def stage_profile(ctx: Context) -> None:
    from compressor.deploy.profile.report import write_reports
    from compressor.deploy.profile.run import ProfileOptions, profile_models

    p, c = ctx.config.profile, ctx.config
    out = ctx.run / "profile"
    inputs = _digest(p.model_dump(), c.data.model_dump(), ctx.digests["student"], ctx.digests["teacher"])
    options = ProfileOptions(**p.model_dump(exclude={"compare_teacher", "e2e"}) | {"data": p.data or c.data.eval or c.data.train,
                             "progress": ctx.progress, "e2e": "" if p.e2e else None})  # fmt: skip
    reuse = {k: ctx.paths[k] for k in ("onnx", "int8") if k in ctx.paths}

    def work() -> None:
        compare = ctx.paths["teacher"] if p.compare_teacher else None
        report = profile_models(ctx.paths["student"], out, options, arch=c.distill.student, compare=compare, compare_arch=c.teacher.arch,
                                trusted=c.teacher.trusted, student_exports=reuse)  # fmt: skip
        write_reports(report, out)

    _stage(ctx, "profile", inputs, [out / "report.json", out / "report.html", out / "report.md"], work)
    ctx.paths["profile_report"] = out / "report.html"


RUNNERS = {
    "teacher": stage_teacher,
    "hints": stage_hints,
    "distill": stage_distill,
    "compare": stage_compare,
    "export": stage_export,
    "profile": stage_profile,
}


def run_pipeline(config: PipelineConfig, from_stage: str | None = None, progress: bool = True, log=print) -> dict[str, Any]:
    """Run every stage in order; returns the paths of what was made."""
    if from_stage is not None and from_stage not in STAGES:
        raise UserError(f"--from {from_stage!r}: known stages are {', '.join(STAGES)}")
    run = config.run_dir
    # the run folder is the pipeline's own: its stages reuse what is unchanged; the lock keeps a second run out
    with claim(run, [], "run", reuse=True):
        ctx = Context(config, run, STAGES.index(from_stage) if from_stage else len(STAGES), progress, log=log)
        save_config(config, run / "config.yaml")
        for name in STAGES:
            RUNNERS[name](ctx)
        # the run folder is ours (claimed above)
        ctx.paths["report"] = write_run_report(run, overwrite=True, budget_ms=config.report.budget_ms)["report.html"]
    return {k: str(v) for k, v in ctx.paths.items()}
