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

import hashlib
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from compressor.models.features import baseline_hints, match_student_points
from compressor.models.stats import count_params

from .. import __version__
from ..checkpoint import STUDENT_SCHEMA, load_checkpoint
from ..config import read_saved_config, save_config
from ..data.scenes import generate_plates, generate_vehicles
from ..detection.data import truth
from ..distributed import World, all_gather, barrier, init_world, shutdown
from ..errors import UserError
from ..hints.plot import plot_similarity
from ..hints.select import HintConfig, build_plan
from ..io import atomic_write_json, atomic_write_text
from ..losses import LOSSES
from ..outdir import claim
from ..report import write_run_report
from ..train.artifacts import finished_run, read_metrics, save_student
from ..train.loop import LoopSettings, fit
from ..train.parts import resolve_device, weights_digest
from .config import CrossConfig, OptimSection
from .data import DOMAINS, MEAN, STD, PairedSet, collate, normalise
from .tasks import TASKS
from .train import CrossTask, Hints

GENERATORS = {"plates": generate_plates, "vehicles": generate_vehicles}
OUTPUTS = ("teacher.pt", "vanilla_student.pt", "baseline_student.pt", "cross_student.pt", "report.json")


def data_root(config: CrossConfig, out: Path) -> Path:
    return Path(config.data.root) if config.data.root else out / "data"


def prepare_data(config: CrossConfig, out: Path, progress: bool) -> Path:
    """The paired set's root; a builtin set is generated and converted on first use."""
    d = config.data
    root = data_root(config, out)
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
    """One domain of a paired set as ``(normalised image, 0)`` items (hint selection), or with
    ``labelled`` as ``(normalised image, class or YOLO rows, index)`` (what INT8 evaluation reads;
    a detection set also gives each image's ``truth``)."""

    def __init__(self, paired: PairedSet, domain: str, labelled: bool = False):
        self.paired, self.index, self.labelled = paired, DOMAINS.index(domain), labelled

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, i: int):
        item = self.paired[i]
        image = normalise(item[self.index][None])[0]
        if not self.labelled:
            return image, 0
        return (image, item[2], i) if self.paired.detection else (image, int(item[2]), i)

    @property
    def detection(self) -> bool:
        return self.paired.detection

    def truth(self, i: int) -> torch.Tensor:
        """Detection: the i-th image's boxes as (M, 5) class, x1, y1, x2, y2 in pixels (what AP50 reads)."""
        return truth(self.paired.targets[i], self.paired.size)


def _check_hint_method(method: str) -> None:
    """Before data is generated or encoded: the hint term must be a feature loss."""
    from ..losses import LOSSES

    if method not in LOSSES:
        raise UserError(f"hints.method: {LOSSES.unknown_message(method)}")
    if LOSSES.get(method).kind != "feature":
        raise UserError(f"hints.method {method!r} is not a feature loss; use at, cc, ft or another hint method")


def run_cross_distill(config: CrossConfig, progress: bool = True, resume: bool = False) -> dict:
    """Run the scheme; returns the report. Raises UserError on bad data, names or outputs.

    ``resume`` continues a run that was stopped (kill -9 included): finished networks are loaded,
    an interrupted one continues from its last checkpoint (``train/<network>/``) to the same
    weights an uninterrupted run gives."""
    out = Path(config.out)
    taken = [name for name in OUTPUTS if (out / name).exists()]
    if taken and not resume:
        raise UserError(f"{out} already holds {', '.join(taken)} from an earlier run; choose another out so nothing is overwritten, "
                        "or --resume to continue it")  # fmt: skip
    if resume and not (out / "config.yaml").exists():
        raise UserError(f"--resume: {out} holds no cross-distillation run; start without --resume")
    if resume and (out / "report.json").exists():
        return _finished(config, out, progress)
    kind = TASKS.get(config.task)
    for net in (config.teacher, config.student):
        try:
            kind.check(net.arch)
        except ValueError as e:
            raise UserError(f"{'teacher' if net is config.teacher else 'student'}.arch: {e}") from None
    _check_hint_method(config.hints.method)
    world = init_world(use_cuda=config.device.startswith("cuda") or config.device == "auto" and torch.cuda.is_available())
    try:
        with claim(out, [], "cross-distill", reuse=True) if world.is_main else nullcontext(out):  # outputs checked above; one run at a time
            return _train_and_report(config, out, kind, progress, resume, world)
    finally:
        shutdown(world)


def _finished(config: CrossConfig, out: Path, progress: bool) -> dict:
    """A finished run (``report.json`` is written last) resumed with its own settings is returned as it
    is: nothing is rewritten, so its files stay byte-identical under any number of resumes.

    Raises:
        UserError: the run was made with other settings (named).
    """
    saved, now = read_saved_config(out / "config.yaml"), config.model_dump(mode="json")
    changed = sorted(k for k in now.keys() | saved.keys() if k != "out" and now.get(k) != saved.get(k))
    if changed:
        raise UserError(f"--resume: {out} holds a finished run made with other settings ({', '.join(changed)} differ); "
                        "choose another --out for the new settings")  # fmt: skip
    if progress:
        print(f"{out} holds a finished run: nothing to resume", file=sys.stderr, flush=True)
    return json.loads((out / "report.json").read_text())


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


@dataclass
class Scheme:
    """What every network of one run shares: the config, the data, where things go."""

    config: CrossConfig
    out: Path
    kind: Any  # the TASKS entry: detection or recognition
    train: PairedSet
    test: PairedSet
    size: tuple[int, int]
    device: torch.device
    world: World
    progress: bool
    resume: bool

    def fit(self, name: str, model: torch.nn.Module, domain: str, epochs: int, hints: Hints | None = None,
            optim: OptimSection | None = None) -> dict[str, float]:  # fmt: skip
        """Train one network on the loop into ``out/train/<name>/`` (or load it when a resumed run
        already saved it), save it with its sidecar and return its scores on the test split."""
        c = self.config
        optim = optim or c.optim
        if self.resume and finished_run(self.out, name) is not None:
            model.load_state_dict(torch.load(self.out / f"{name}.pt", map_location="cpu", weights_only=True))
            return json.loads((self.out / f"{name}.json").read_text())["scores"]
        folder = self.out / "train" / name
        try:
            task = CrossTask(model, self.kind, self.train, self.test, domain, optim, self.size, epochs, c.seed, self.device, self.world,
                             hints)  # fmt: skip
        except ValueError as e:
            raise UserError(f"hints: {e}") from None
        key = json.dumps([name, c.model_dump(exclude={"out"}, mode="json")], sort_keys=True)
        settings = LoopSettings(folder, task.total_epochs, hashlib.sha256(key.encode()).hexdigest()[:16], self.device, self.world, c.amp,
                                optim.clip_grad, c.tensorboard, self.progress, desc=name.replace("_", " "))  # fmt: skip
        try:
            fitted = fit(task, settings, resume=self.resume and (folder / "checkpoints" / "last.pt").exists())
            scores = fitted.final or task.evaluate()
        finally:
            task.close()
        if self.world.is_main:
            self.save(model, name, domain, scores, fitted.best, epochs, hints)
        return scores

    def save(self, model: torch.nn.Module, name: str, domain: str, scores: dict, best: float, epochs: int, hints: Hints | None) -> None:
        """``<name>.pt`` and a sidecar with the schema of ``compressor distill``'s (plus task, domain, scores)."""
        c = self.config
        net = c.teacher if name == "teacher" else c.student
        made_by = {"tool_version": __version__, "method": f"cross-distillation ({c.hints.method})" if hints else c.task,
                   "data": c.data.root or f"builtin:{c.data.builtin}", "teacher_arch": c.teacher.arch if hints else None,
                   "teacher_hints": hints.teacher_points if hints else [], "student_hints": hints.student_points if hints else [],
                   "epochs": epochs}  # fmt: skip
        sidecar = {"schema": STUDENT_SCHEMA, "version": 1, "arch": net.arch, "arch_kwargs": dict(net.kwargs), "points": net.points,
                   "num_classes": self.train.classes, "input_size": list(self.size), "mean": list(MEAN), "std": list(STD),
                   "class_names": list(getattr(self.train, "class_names", [])), "task": c.task, "domain": domain, "made_by": made_by,
                   "metrics": {"final": scores, "best": best}, "scores": scores}  # fmt: skip
        save_student(self.out, model, sidecar, name)


def _train_and_report(config: CrossConfig, out: Path, kind, progress: bool, resume: bool, world: World) -> dict:
    root = prepare_data(config, out, progress) if world.is_main else data_root(config, out)  # one process generates, the others wait
    barrier(world)
    size = tuple(config.data.image_size)
    labels = root / "labels" if config.task == "detection" else None
    train = PairedSet(root / "pixel", root / "hevc", "train", size, labels, config.data.num_classes)
    test = PairedSet(root / "pixel", root / "hevc", "test", size, labels, train.classes)
    if world.is_main:
        save_config(config, out / "config.yaml")
    scheme = Scheme(config, out, kind, train, test, size, resolve_device(config.device, world), world, progress, resume)
    start = time.perf_counter()
    teacher, teacher_scores = _teacher(scheme)
    timings = {"teacher_s": round(time.perf_counter() - start, 1)}
    teacher_points, plan = _teacher_hints(scheme, teacher, root)
    h = config.hints
    torch.manual_seed(config.seed + 1)  # both students start from the same weights
    template = kind.build(config.student.arch, train.classes, size, config.student.kwargs, config.student.points)
    initial = template.state_dict()
    try:
        student_points = list(h.student_points) if h.student_points else match_student_points(teacher, template, teacher_points)
    except ValueError as e:
        raise UserError(f"hints: {e}") from None
    if len(student_points) != len(teacher_points):
        raise UserError(f"hints.student_points has {len(student_points)} entries for {len(teacher_points)} teacher hints")
    results = {"teacher": {"arch": config.teacher.arch, "domain": config.teacher.domain, **teacher_scores}}
    # the same cross distillation at the teacher's stage ends, paired by the same rule: is the clustering's choice better?
    # With more stages than hints (a detector's backbone: 5 stages, k = 3) the deepest k stage ends, the inputs of
    # YOLOv3's three detection scales.
    stage_ends = baseline_hints(teacher)[-len(teacher_points) :]
    baseline = None
    if config.baseline_hints and not h.teacher_points and stage_ends != teacher_points and len(stage_ends) == len(teacher_points):
        baseline = (stage_ends, list(h.student_points) if h.student_points else match_student_points(teacher, template, stage_ends))
    points = {"cross_student": (teacher_points, student_points), "baseline_student": baseline}
    names = (["vanilla_student"] if config.vanilla else []) + (["baseline_student"] if baseline else []) + ["cross_student"]
    for name in names:
        start = time.perf_counter()
        student = kind.build(config.student.arch, train.classes, size, config.student.kwargs, config.student.points)
        student.load_state_dict(initial)
        hints = Hints(teacher, config.teacher.domain, *points[name], h) if name in points else None
        results[name] = {"arch": config.student.arch, "domain": config.student.domain,
                         **scheme.fit(name, student, config.student.domain, config.student.epochs, hints)}  # fmt: skip
        timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
    int8 = _quantization_aware(scheme, student, hints) if config.quant.qat else None
    digests = all_gather(weights_digest(student), world)  # under torchrun every rank must end with the same weights
    params = {"teacher": count_params(teacher), "student": count_params(student)}
    for key, row in results.items():
        row["params"] = params["teacher" if key == "teacher" else "student"]
    report = {"version": 1, "task": config.task, "metric": kind.metric, "hint_method": h.method,
              "lambda": h.weight if h.weight is not None else LOSSES.get(h.method).default_weight, "teacher_points": teacher_points,
              "student_points": student_points, "hint_plan": None if plan is None else "hints/plan.json", "results": results,
              "baseline_points": {"teacher": baseline[0], "student": baseline[1]} if baseline else None,
              "timings": timings, "ranks": world.size, "ranks_identical": len(set(digests)) == 1}  # fmt: skip
    if int8 is not None:
        report["int8"] = int8
    if world.is_main:
        _write_outputs(out, report)
    return report


def _quantization_aware(scheme: Scheme, student: torch.nn.Module, hints: Hints) -> dict[str, Any] | None:
    """``quant.qat``: the cross student fine-tuned through its Q/DQ graph with the same hint loss
    from the compressed-domain teacher (``compressor.train.qat``; the domain adaptors continue from
    the float stage's, fresh only when a resumed run loaded the finished float student), then
    ``export/cross_student.int8.onnx`` from the learned steps with its ONNX Runtime top-1 (a
    detector: AP50) and parity; returns what the export reports."""
    from ..deploy.artifact import ModelArtifact
    from ..deploy.export import export_qat
    from ..train.qat import qat_about, qat_optim, qat_student

    c, q = scheme.config, scheme.config.quant
    view = DomainView(scheme.train, c.student.domain)
    calibration = torch.stack([view[i][0] for i in range(min(q.calibration, len(view)))])
    graph = qat_student(student, calibration, q.target)
    scheme.fit("cross_student_qat", graph, c.student.domain, q.epochs, hints, optim=qat_optim(c.optim, q).model_copy(
        update={"backbone_lr_mult": 1.0}))  # fmt: skip
    if not scheme.world.is_main:
        return None
    art = ModelArtifact(scheme.out / "cross_student_qat.pt", c.student.arch, scheme.train.classes, scheme.size, MEAN, STD, [],
                        student.eval(), {"made_by": {"method": f"cross-distillation ({c.hints.method})"}})  # fmt: skip
    test = DomainView(scheme.test, c.student.domain, labelled=True)
    about = qat_about(f"cross-distillation ({c.hints.method})", q)
    return export_qat(graph, art, scheme.out / "export", "cross_student", q.target, test, q.eval_samples, about)


def _write_outputs(out: Path, report: dict) -> None:
    """metrics.jsonl of every network (one row per epoch, tagged with the network), report.json and the run report."""
    rows = []
    for name in ("teacher", "vanilla_student", "baseline_student", "cross_student"):
        for r in read_metrics(out / "train" / name / "metrics.jsonl"):
            terms = {k: round(v, 5) for k, v in r["train"].items() if k not in ("images_per_s", "seconds")}
            rows.append({"model": name.replace("_", " "), "epoch": r["epoch"], "eval": r["eval"], **terms})
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "report.json", report)
    write_run_report(out, overwrite=True)  # the folder was checked to be new or ours (claim): its report is ours to write


def _teacher(scheme: Scheme) -> tuple[torch.nn.Module, dict[str, float]]:
    """The frozen teacher: loaded from ``teacher.checkpoint``, or trained on its domain with the task loss."""
    c, t = scheme.config, scheme.config.teacher
    if t.checkpoint:
        teacher = load_checkpoint(t.checkpoint, arch=t.arch, num_classes=scheme.train.classes, kwargs=t.kwargs, points=t.points,
                                  input_size=scheme.size).model.to(scheme.device).eval()  # fmt: skip
        d = DOMAINS.index(t.domain)
        loader = DataLoader(scheme.test, c.optim.batch_size, collate_fn=collate)
        batches = ((b[d].to(scheme.device), b[2].to(scheme.device)) for b in loader)
        scores = scheme.kind.evaluate(teacher, batches, scheme.size)
        if scheme.world.is_main:
            scheme.save(teacher, "teacher", t.domain, scores, scores[scheme.kind.metric], 0, None)
    else:
        torch.manual_seed(c.seed)
        teacher = scheme.kind.build(t.arch, scheme.train.classes, scheme.size, t.kwargs, t.points)
        scores = scheme.fit("teacher", teacher, t.domain, t.epochs)
    return teacher.to(scheme.device).eval().requires_grad_(False), scores


def _teacher_hints(scheme: Scheme, teacher: torch.nn.Module, root: Path) -> tuple[list[int], Any]:
    """The teacher's hint points: given, or chosen once per run by clustering its backbone (PURSUhInT)."""
    c, h = scheme.config, scheme.config.hints
    if h.teacher_points:
        return list(h.teacher_points), None
    path = scheme.out / "hints" / "plan.json"
    if scheme.resume and path.exists():
        return json.loads(path.read_text())["hints"], path
    hint_cfg = HintConfig(**h.model_dump(include=set(HintConfig.model_fields)) | {"seed": c.seed, "batch_size": min(h.batch_size, 64)})
    try:
        hint_cfg.check()
    except UserError as e:
        raise UserError(f"hints: {e}") from None
    view = DomainView(scheme.train, c.teacher.domain)
    plan = build_plan(teacher, c.teacher.arch, scheme.train.classes, view, f"{root} ({c.teacher.domain})", hint_cfg,
                      progress=scheme.progress, checkpoint=str(scheme.out / "teacher.pt"))  # fmt: skip
    if scheme.world.is_main:
        plan.save(path)
        plot_similarity(plan, scheme.out / "hints" / "similarity.png")
    return plan.hints, plan
