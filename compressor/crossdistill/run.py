"""``run_cross_distill``: the whole scheme of thesis 000 ch. 5 from one config.

1. data: a paired pixel / HEVC set (a builtin synthetic one is generated and converted with
   the real encoder when asked);
2. teacher on its domain (HEVC by default) with the task loss only, or loaded from a checkpoint;
3. teacher hints by clustering its backbone's layers (PURSUhInT, k = 3 detection / 4
   recognition) on teacher-domain training images; student points in the same stages;
4. the vanilla student (task loss only) and the cross-distilled student (task loss + lambda *
   hint loss through domain adaptors), from the same initial weights, on the student domain;
5. scores of all three on the test split, written to ``report.json``, and the run's
   ``report.html`` / ``report.md`` (``compressor report``).

Same-domain (classical) and reverse (pixel teacher -> HEVC student) ablations are the
``teacher.domain`` / ``student.domain`` settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from compressor.models.features import hint_points
from compressor.models.stats import count_params

from ..checkpoint import load_checkpoint
from ..config import save_config
from ..data.scenes import generate_plates, generate_vehicles
from ..errors import UserError
from ..hints.plot import plot_similarity
from ..hints.select import HintConfig, build_plan
from ..io import atomic_write_json, atomic_write_text
from ..outdir import claim
from ..report import write_run_report
from ..train.artifacts import save_student
from .config import CrossConfig
from .data import DOMAINS, MEAN, STD, PairedSet, collate, normalise
from .tasks import TASKS
from .train import Hints, fit

GENERATORS = {"plates": generate_plates, "vehicles": generate_vehicles}
OUTPUTS = ("teacher.pt", "vanilla_student.pt", "cross_student.pt", "report.json")


def prepare_data(config: CrossConfig, out: Path, progress: bool) -> Path:
    """The paired set's root; a builtin set is generated and converted on first use."""
    d = config.data
    root = Path(d.root) if d.root else out / "data"
    if d.builtin is None:
        if not root.is_dir():
            folders = "pixel/, hevc/ and labels/" if config.task == "detection" else "pixel/ and hevc/"
            raise UserError(f"data.root {root} does not exist; it must hold {folders}, each with train/ and test/")
        return root
    if not (root / "pixel").exists():
        GENERATORS[d.builtin](root, d.train, d.test, d.seed, progress=progress)
    from ..hevc import ConvertOptions, EncoderSettings, convert_folder, find_encoder

    convert_folder(root / "pixel", root / "hevc", find_encoder(d.encoder), ConvertOptions(d.variant, EncoderSettings(qp=d.qp)), progress)
    return root


class DomainView(Dataset):
    """One domain of a paired set as ``(normalised image, 0)`` items, for hint selection."""

    def __init__(self, paired: PairedSet, domain: str):
        self.paired, self.index = paired, DOMAINS.index(domain)

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, i: int):
        return normalise(self.paired[i][self.index][None])[0], 0


def match_student_points(teacher: torch.nn.Module, student: torch.nn.Module, teacher_points: list[int]) -> list[int]:
    """For each teacher hint, the student point at the same relative depth of the same stage
    (the student's last stage when it has fewer); a taken point moves to the nearest free one."""
    t_points, s_points = hint_points(teacher), hint_points(student)
    if len(teacher_points) > len(s_points):
        raise ValueError(f"{len(teacher_points)} teacher hints but the student has only {len(s_points)} candidate points; lower hints.k")
    by_stage: dict[int, list[int]] = {}
    for p in s_points:
        by_stage.setdefault(p.stage, []).append(p.index)
    chosen: list[int] = []
    for h in teacher_points:
        stage = min(t_points[h - 1].stage, max(by_stage))
        t_stage = [p.index for p in t_points if p.stage == t_points[h - 1].stage]
        s_stage = by_stage.get(stage) or by_stage[max(by_stage)]
        pos = (t_stage.index(h) / (len(t_stage) - 1)) if len(t_stage) > 1 else 1.0
        want = s_stage[round(pos * (len(s_stage) - 1))]
        free = [p.index for p in s_points if p.index not in chosen]
        chosen.append(min(free, key=lambda i: (abs(i - want), -i)))
    return chosen


def _check_hint_method(method: str) -> None:
    """Before data is generated or encoded: the hint term must be a feature loss."""
    from ..losses import LOSSES

    if method not in LOSSES:
        raise UserError(f"hints.method: {LOSSES.unknown_message(method)}")
    if LOSSES.get(method).kind != "feature":
        raise UserError(f"hints.method {method!r} is not a feature loss; use at, cc, ft or another hint method")


def run_cross_distill(config: CrossConfig, progress: bool = True) -> dict:
    """Run the scheme; returns the report. Raises UserError on bad data, names or outputs."""
    out = Path(config.out)
    taken = [name for name in OUTPUTS if (out / name).exists()]
    if taken:
        raise UserError(f"{out} already holds {', '.join(taken)} from an earlier run; choose another out so nothing is overwritten")
    task = TASKS.get(config.task)
    for net in (config.teacher, config.student):
        try:
            task.check(net.arch)
        except ValueError as e:
            raise UserError(f"{'teacher' if net is config.teacher else 'student'}.arch: {e}") from None
    _check_hint_method(config.hints.method)
    with claim(out, [], "cross-distill", reuse=True):  # the outputs were checked above; the lock keeps a second run out
        return _train_and_report(config, out, task, progress)


def run_cross_distill_seeds(config: CrossConfig, seeds: list[int], progress: bool = True) -> dict:
    """The scheme once per seed into ``OUT/seed-<s>/`` (the teacher trained with the first seed and
    reused, as the thesis scores its students over three runs); ``OUT/seeds.json`` / ``seeds.md``
    hold every network's score per seed and its mean ± sample std. A finished seed is not redone."""
    from ..train.repeat import mean_std

    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {','.join(map(str, seeds))}: give two or more different seeds (the thesis uses 3)")
    out, reports = Path(config.out), []
    for seed in seeds:
        one = config.model_copy(deep=True)
        one.seed, one.out = seed, str(out / f"seed-{seed}")
        if config.data.builtin and not config.data.root:  # one generated set for every seed
            one.data.root = str(out / "data")
        if reports:
            one.teacher.checkpoint = str(out / f"seed-{seeds[0]}" / "teacher.pt")
        done = Path(one.out) / "report.json"
        reports.append(json.loads(done.read_text()) if done.exists() else run_cross_distill(one, progress))
    metric = reports[0]["metric"]
    results = {}
    for name in reports[0]["results"]:
        values = [r["results"][name][metric] for r in reports]
        results[name] = {"per_seed": values, **mean_std(values)}
    summary = {"schema": "edge-compressor/cross-seeds", "version": 1, "task": config.task, "metric": metric, "seeds": seeds,
               "results": results}  # fmt: skip
    lines = [f"# Cross distillation ({config.task}), {metric} over seeds {', '.join(map(str, seeds))}", "",
             "| network | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |", "|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
    for name, row in results.items():
        per_seed = " | ".join(f"{v:.2f}" for v in row["per_seed"])
        lines.append(f"| {name.replace('_', ' ')} | {per_seed} | {row['mean']:.2f} ± {row['std']:.2f} |")
    atomic_write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", "\n".join(lines) + "\n")
    return summary


def _train_and_report(config: CrossConfig, out: Path, task, progress: bool) -> dict:
    root = prepare_data(config, out, progress)
    size = tuple(config.data.image_size)
    labels = root / "labels" if config.task == "detection" else None
    train = PairedSet(root / "pixel", root / "hevc", "train", size, labels, config.data.num_classes)
    test = PairedSet(root / "pixel", root / "hevc", "test", size, labels, train.classes)
    save_config(config, out / "config.yaml")
    o = config.optim
    loader = DataLoader(train, o.batch_size, shuffle=True, num_workers=o.workers, collate_fn=collate, drop_last=len(train) > o.batch_size,
                        generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    test_loader = DataLoader(test, o.batch_size, shuffle=False, num_workers=o.workers, collate_fn=collate)
    history: list[dict] = []
    log = history.append

    def score(model: torch.nn.Module, domain: str) -> dict[str, float]:
        d = DOMAINS.index(domain)
        return task.evaluate(model, ((b[d], b[2]) for b in test_loader), size)

    def save(model: torch.nn.Module, name: str, arch: str, domain: str, scores: dict) -> None:
        sidecar = {
            "arch": arch,
            "num_classes": train.classes,
            "task": config.task,
            "domain": domain,
            "input_size": list(size),
            "mean": list(MEAN),
            "std": list(STD),
            "class_names": getattr(train, "class_names", []),
            "scores": scores,
        }
        save_student(out, model, sidecar, name)

    timings = {}
    # 2. teacher
    start = time.perf_counter()
    if config.teacher.checkpoint:
        t = config.teacher
        teacher = load_checkpoint(
            t.checkpoint, arch=t.arch, num_classes=train.classes, kwargs=t.kwargs, points=t.points, input_size=size
        ).model
    else:
        torch.manual_seed(config.seed)
        teacher = task.build(config.teacher.arch, train.classes, size, config.teacher.kwargs, config.teacher.points)
        fit(teacher, task, loader, config.teacher.domain, config.teacher.epochs, o, size, desc="teacher", log=log)
    teacher.eval().requires_grad_(False)
    teacher_scores = score(teacher, config.teacher.domain)
    save(teacher, "teacher", config.teacher.arch, config.teacher.domain, teacher_scores)
    timings["teacher_s"] = round(time.perf_counter() - start, 1)

    # 3. hints
    h = config.hints
    if h.teacher_points:
        teacher_points = list(h.teacher_points)
        plan = None
    else:
        hint_cfg = HintConfig(samples=h.samples, k=h.k, metric=h.metric, batch_size=64, seed=config.seed)
        try:
            hint_cfg.validate()
        except UserError as e:
            raise UserError(f"hints: {e}") from None
        plan = build_plan(teacher, config.teacher.arch, train.classes, DomainView(train, config.teacher.domain),
                          f"{root} ({config.teacher.domain})", hint_cfg, progress=progress, checkpoint=str(out / "teacher.pt"))  # fmt: skip
        plan.save(out / "hints" / "plan.json")
        plot_similarity(plan, out / "hints" / "similarity.png")
        teacher_points = plan.hints

    # 4. students from the same initial weights
    torch.manual_seed(config.seed + 1)
    template = task.build(config.student.arch, train.classes, size, config.student.kwargs, config.student.points)
    initial = template.state_dict()
    try:
        student_points = list(h.student_points) if h.student_points else match_student_points(teacher, template, teacher_points)
    except ValueError as e:
        raise UserError(f"hints: {e}") from None
    if len(student_points) != len(teacher_points):
        raise UserError(f"hints.student_points has {len(student_points)} entries for {len(teacher_points)} teacher hints")
    results = {"teacher": {"arch": config.teacher.arch, "domain": config.teacher.domain, **teacher_scores}}
    runs = (["vanilla"] if config.vanilla else []) + ["cross"]
    for kind in runs:
        start = time.perf_counter()
        student = task.build(config.student.arch, train.classes, size, config.student.kwargs, config.student.points)
        student.load_state_dict(initial)
        hints = None
        if kind == "cross":
            try:
                hints = Hints(teacher, config.teacher.domain, teacher_points, student_points, h)
                fit(student, task, loader, config.student.domain, config.student.epochs, o, size, hints, desc="cross student", log=log)
            except ValueError as e:
                raise UserError(f"hints: {e}") from None
        else:
            fit(student, task, loader, config.student.domain, config.student.epochs, o, size, desc="vanilla student", log=log)
        scores = score(student, config.student.domain)
        save(student, f"{kind}_student", config.student.arch, config.student.domain, scores)
        results[f"{kind}_student"] = {"arch": config.student.arch, "domain": config.student.domain, **scores}
        timings[f"{kind}_student_s"] = round(time.perf_counter() - start, 1)

    params = {"teacher": count_params(teacher), "student": count_params(student)}
    for key, row in results.items():
        row["params"] = params["teacher" if key == "teacher" else "student"]
    report = {
        "version": 1,
        "task": config.task,
        "metric": task.metric,
        "hint_method": h.method,
        "lambda": hints.weight,
        "teacher_points": teacher_points,
        "student_points": student_points,
        "hint_plan": None if plan is None else "hints/plan.json",
        "results": results,
        "timings": timings,
    }
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    atomic_write_json(out / "report.json", report)
    write_run_report(out, overwrite=True)  # the folder was checked to be new or ours (claim): its report is ours to write
    return report
