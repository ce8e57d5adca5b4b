"""The distillation engine: ``distill(config)`` trains a student against a frozen teacher.

Per epoch: seeded data order and augmentation (so ``--resume`` replays exactly), the teacher's
forward without gradients (optionally compiled, channels-last, autocast, or INT8: ``teacher.py``),
the student's forward + loss terms (001 eq. 8) + backward + step, evaluation (top-1/top-5), one line in
``metrics.jsonl`` and an atomic ``checkpoints/last.pt``. The student is saved alone at the end.
Runs unchanged under ``torchrun`` (DDP): sharded sampling, gradients all-reduced, rank 0 writes.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models import attach_points, ensure_points, is_factory
from compressor.models.stats import count_params

from ..checkpoint import LoadedCheckpoint, in_memory, load_checkpoint
from ..config import read_saved_config, save_config
from ..data import ImageDataset, open_dataset
from ..distributed import World, all_gather, init_world, shutdown
from ..errors import UserError
from ..losses import (
    LOSSES,
    LossContext,
    Objective,
    Outputs,
    PrepareContext,
    build_objective,
    needs_hints,
    needs_student_hints,
    online_method,
    parse_method,
)
from ..outdir import claim
from . import artifacts
from .config import DistillConfig, QuantConfig
from .data import eval_loader, train_loader
from .hints import HintPairs, resolve_hints
from .loop import LoopSettings, Precision, Task, fit, step
from .parts import (
    build_student,
    datasets,
    evaluate,
    fingerprint_changes,
    learning_rate,
    make_optimizer,
    points_at,
    resolve_device,
    state_fingerprint,
    student_sidecar,
    weights_digest,
)
from .runner import FeatureTap
from .teacher import Teacher


class Trainee(nn.Module):
    """Student + loss terms (with their adapters) as one module, so DDP syncs both."""

    def __init__(self, student: nn.Module, objective: Objective, tap: FeatureTap, compile_student: bool = False):
        super().__init__()
        self.student = student
        self.objective = objective
        self.tap = tap
        # Only the training forward is compiled; evaluation calls ``self.student`` eagerly. The
        # compiled wrapper is kept off the module tree, so the checkpoint's keys do not depend on
        # this setting (a run can be resumed with it switched).
        object.__setattr__(self, "_forward", torch.compile(student) if compile_student else student)

    def forward(self, images: torch.Tensor, teacher_out: Outputs | None, labels: torch.Tensor, index: torch.Tensor, init_stage: bool):
        self.tap.reset()
        s_out = self.tap.outputs(self._forward(images), labels, index)
        s_out.inputs = images
        return self.objective.init_forward(s_out, teacher_out) if init_stage else self.objective(s_out, teacher_out)


@dataclass
class Setup:
    """Everything built before the first epoch."""

    config: DistillConfig
    world: World
    device: torch.device
    out: Path
    teacher_ckpt: LoadedCheckpoint | None  # None: plain training (method 'ce'), e.g. of a teacher
    teacher: Teacher | None
    trainee: nn.Module  # Trainee, or DDP(Trainee)
    core: Trainee
    optimizer: torch.optim.Optimizer
    train_set: ImageDataset
    eval_set: ImageDataset
    hints: HintPairs
    precision: Precision  # autocast and loss scaling of train.amp
    notes: list[str]
    init_digest: str  # the student's weights before training: equal in every run of the same seed and architecture


def _teacher(config: DistillConfig, input_size: tuple[int, int]) -> LoadedCheckpoint | None:
    if config.teacher is not None:
        t = config.teacher
        return load_checkpoint(t.checkpoint, arch=t.arch, trusted=t.trusted, kwargs=t.kwargs, points=t.points, input_size=input_size)
    if parse_method(config.loss.method):
        raise UserError(f"loss.method {config.loss.method!r} distils from a teacher: give teacher.checkpoint (--teacher)")
    return None


def _ensemble_member(path: str, config: DistillConfig, num_classes: int) -> nn.Module:
    loaded = load_checkpoint(path, trusted=config.teacher.trusted)
    if loaded.num_classes != num_classes:
        raise UserError(f"teacher.ensemble member {path} has {loaded.num_classes} classes but the teacher {num_classes}")
    return loaded.model


def _prepare_terms(config: DistillConfig, names: list[str], loaded: LoadedCheckpoint | None, student: nn.Module, train_set: ImageDataset,
                   hints: HintPairs, device: torch.device) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Methods that fit something on the teacher before training and change the student (letKD's
    layers) do it here, before the optimiser and the loss are built."""
    prepared = {}
    for name in names:
        ctx = PrepareContext(loaded.model if loaded else None, student, train_set, hints.teacher, hints.student,
                             config.loss.params.get(name, {}), device, config.train.epochs)  # fmt: skip
        try:
            prepared[name] = LOSSES.get(name).prepare(ctx)
        except ValueError as e:
            raise UserError(f"loss.params.{name}: {e}") from None
    return {name: extra for name, extra in prepared.items() if extra}


def _loss_context(
    teacher: Teacher | None, student: nn.Module, tap: FeatureTap, sample: torch.Tensor, num_classes: int, n: int, preact: bool
):
    """One dry-run forward of both networks to observe the shapes the adapters need."""
    was = student.training
    student.eval()
    with torch.no_grad():
        labels = torch.zeros(len(sample), dtype=torch.long, device=sample.device)
        tap.reset()
        s_out = tap.outputs(student(sample), labels, labels)
        t_out = teacher(sample, labels, labels, eager=True) if teacher is not None else s_out
    student.train(was)
    shape = lambda f: tuple(int(d) for d in f.shape[1:])  # noqa: E731
    return LossContext(
        tuple(shape(f) for f in s_out.feats),
        tuple(shape(f) for f in t_out.feats),
        int(s_out.embedding.flatten(1).shape[1]),
        int(t_out.embedding.flatten(1).shape[1]),
        num_classes,
        n,
        preact,
    )


def setup(config: DistillConfig, teacher_model: nn.Module | None = None, student_model: nn.Module | None = None) -> Setup:
    """Check and build everything; raises UserError before any file is written."""
    cuda = config.train.device.startswith("cuda") or (config.train.device == "auto" and torch.cuda.is_available())
    world = init_world(use_cuda=cuda)
    device = resolve_device(config.train.device, world)
    t = config.train
    torch.manual_seed(t.seed)
    try:
        uses_hints = needs_hints(config.loss.method)
    except ValueError as e:
        raise UserError(f"loss.method: {e}") from None
    # the data first: a factory teacher's points are found at the data's input size (a model that
    # only runs at 64 x 64 cannot be traced at the default 32 x 32)
    train_set, eval_set = datasets(config)
    num_classes, size = train_set.info.num_classes, train_set.info.input_size
    loaded = in_memory(teacher_model) if teacher_model is not None else _teacher(config, size)
    if loaded is not None and loaded.num_classes != num_classes:
        raise UserError(f"data.train ({train_set.info.name}) has {num_classes} classes but the teacher was trained for "
                        f"{loaded.num_classes}; give the teacher's dataset, or a teacher trained on this one")  # fmt: skip
    patterns = config.teacher.points if config.teacher else None
    if teacher_model is not None:
        points_at(ensure_points, teacher_model, size, patterns)
    elif loaded is not None and is_factory(loaded.arch):  # its points depend on the input size, known only now
        points_at(attach_points, loaded.model, size, patterns)
    if student_model is not None:
        points_at(ensure_points, student_model, size, config.student.points)
    # Seeded again here, not only above: loading the teacher draws from torch's RNG (its layers are
    # initialised before the weights are loaded), so without this the same student and seed would
    # start from other weights with a teacher than alone, and "distilled vs trained alone" would
    # compare two initialisations as well as two objectives.
    torch.manual_seed(t.seed)
    student = student_model if student_model is not None else build_student(config, num_classes, size)
    init_digest = weights_digest(student)
    hints = HintPairs([], [], False, "none")
    names = parse_method(config.loss.method)
    try:
        placed = [p for n in names if (p := LOSSES.get(n).default_hints(loaded.model, student, config.loss.params.get(n, {})))]
    except ValueError as e:
        raise UserError(f"loss.params: {e}") from None
    if uses_hints:
        hints = resolve_hints(config.hints, loaded.model, loaded.arch, loaded.digest, student, placed[0] if placed else None,
                              student_side=needs_student_hints(config.loss.method))  # fmt: skip
    prepared = _prepare_terms(config, names, loaded, student, train_set, hints, device)
    teacher = None
    if loaded is not None:
        members = config.teacher.ensemble if config.teacher else []
        ensemble = [_ensemble_member(path, config, loaded.num_classes).to(device) for path in members]
        teacher = Teacher(loaded.model.to(device), hints.teacher, hints.preact, t.channels_last, t.compile_teacher, ensemble)
        if t.teacher_int8:
            _quantize_teacher(config, teacher, train_set, eval_set, device)
    student = student.to(device)
    if t.channels_last:
        student = student.to(memory_format=torch.channels_last)
    tap = FeatureTap(student, hints.student, hints.preact)
    sample = torch.stack([eval_set[i][0] for i in range(min(2, len(eval_set)))]).to(device)
    ctx = _loss_context(teacher, student, tap, sample, num_classes, len(train_set), hints.preact)
    try:
        lc = config.loss
        params = {n: {**lc.params.get(n, {}), **prepared.get(n, {})} for n in set(lc.params) | set(prepared)}
        ramps = {name: (r.start, r.end, r.until) for name, r in lc.schedules.items()}
        objective = build_objective(lc.method, ctx, lc.gamma, lc.alpha, lc.beta, lc.weights, params, ramps, t.epochs).to(device)
    except ValueError as e:
        raise UserError(f"loss: {e}") from None
    needing = [n for n, term in objective.terms.items() if term.needs_init]
    if t.init_epochs > 0 and not any(term.has_init_stage for term in objective.terms.values()):
        raise UserError(f"train.init_epochs = {t.init_epochs} but {lc.method} has no initialisation stage (fitnet with two_stage: true, "
                        "ab, fsp, ft, ekd have one): set train.init_epochs: 0")  # fmt: skip
    if t.init_epochs == 0 and needing:  # FT's paraphraser, AB, EKD's heads: RepDistiller gives them 30 of 240 epochs
        t.init_epochs = max(1, round(t.epochs / 8))
        init_note = f"{'+'.join(needing)} needs an initialisation stage: train.init_epochs set to {t.init_epochs} (1/8 of train.epochs)"
    else:
        init_note = None
    core = Trainee(student, objective, tap, t.compile_student)
    trainee = core
    if world.distributed:
        trainee = nn.parallel.DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    optimizer = make_optimizer(config, [p for p in core.parameters() if p.requires_grad])
    out = Path(config.out)
    notes = (list(loaded.notes) if loaded else []) + list(hints.notes) + ([init_note] if init_note else [])
    if teacher is not None and teacher.int8_check is not None:
        notes.append(teacher.int8_check.summary())
    return Setup(config, world, device, out, loaded, teacher, trainee, core, optimizer, train_set, eval_set, hints,
                 Precision(t.amp, device), notes, init_digest)  # fmt: skip


def _quantize_teacher(config: DistillConfig, teacher: Teacher, train_set: ImageDataset, eval_set: ImageDataset,
                      device: torch.device) -> None:  # fmt: skip
    """Calibrate the INT8 teacher on seeded training images and check it on evaluation images."""
    if device.type != "cpu":
        raise UserError(f"train.teacher_int8 runs the teacher on the CPU, but the run is on {device}; use train.amp on CUDA")
    g = torch.Generator().manual_seed(config.train.seed)
    picked = torch.randperm(len(train_set), generator=g)[: config.train.int8_calibration].tolist()
    with torch.random.fork_rng(devices=[]):  # the augmentation draws from torch's RNG; later inits must not see it
        images = torch.stack([train_set[i][0] for i in picked])
    held_out = torch.stack([eval_set[i][0] for i in range(min(len(eval_set), 256))])
    try:
        check = teacher.quantize(list(images.split(config.data.batch_size)), held_out)
    except Exception as e:  # export or quantization of an unusual graph: say which and how to go on
        raise UserError(f"train.teacher_int8: the teacher could not be exported and quantized ({type(e).__name__}: {e}); "
                        f"run without train.teacher_int8 (or with train.compile_teacher)") from e  # fmt: skip
    if check.top1_agreement < config.train.int8_min_agreement:
        raise UserError(f"train.teacher_int8: {check.summary()}, below train.int8_min_agreement "
                        f"({100 * config.train.int8_min_agreement:.1f}%); calibrate on more images (train.int8_calibration) "
                        f"or run the exact teacher (train.compile_teacher)")  # fmt: skip


def _batch_to(batch, device: torch.device, channels_last: bool):
    images, labels, index = (x.to(device, non_blocking=True) for x in batch)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels, index


class DistillTask(Task):
    """Distillation (and plain training, method ``ce``) as a task of the loop: the frozen teacher's
    forward without gradients, the student's forward and the loss terms (001 eq. 8)."""

    def __init__(self, s: Setup):
        self.s, self.module, self.optimizer, self.init_stage = s, s.core, s.optimizer, False

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.s.config
        lr = learning_rate(c, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        objective = self.s.core.objective
        objective.set_epoch(epoch - c.train.init_epochs)
        self.init_stage = epoch < c.train.init_epochs
        # each term's weight in this epoch's total (ramps move them), so curves can show what each term contributes
        weights = {} if self.init_stage else {"ce": objective.gamma, **objective.weights}
        return {"stage": "init" if self.init_stage else "distill", "lr": lr, "weights": weights}

    def batches(self, epoch: int):
        c = self.s.config
        for batch in train_loader(self.s.train_set, c.data.batch_size, c.data.workers, c.train.seed, epoch, self.s.world):
            yield _batch_to(batch, self.s.device, c.train.channels_last)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        images, labels, index = batch
        t_out = self.s.teacher(images, labels, index) if self.s.teacher is not None else None
        return self.s.trainee(images, t_out, labels, index, self.init_stage)

    def evaluate(self) -> dict[str, float]:
        c = self.s.config
        return evaluate(self.s.core.student, self.s.eval_set, c.data.eval_batch_size, c.data.workers, self.s.device, self.s.world)

    def train(self) -> None:
        self.s.trainee.train()


def train_step(s: Setup, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, init_stage: bool, where: str = "") -> dict:
    """One step of the loop on one batch (teacher forward, student forward + loss terms, backward,
    optimiser step); returns the detached loss terms. ``TrainingDiverged`` on a non-finite loss."""
    task = DistillTask(s)
    task.init_stage = init_stage
    return step(task, (images, labels, index), s.precision, s.config.optim.clip_grad, s.out, where)


def _capacity_ratio(s: Setup) -> float | None:
    """Teacher params / student params (EKD reports it; useful for any pair)."""
    return round(count_params(s.teacher.model) / count_params(s.core.student), 3) if s.teacher else None


def _sidecar(s: Setup, final: dict[str, float], best: float, epochs: int) -> dict[str, Any]:
    made_by = {
        "teacher_arch": s.teacher_ckpt.arch if s.teacher_ckpt else None,
        "teacher_digest": s.teacher_ckpt.digest if s.teacher_ckpt else None,
        "teacher_hints": s.hints.teacher,
        "student_hints": s.hints.student,
        "preact": s.hints.preact,
        "hint_source": s.hints.source,
        "epochs": epochs,
        "seed": s.config.train.seed,
        "init_digest": s.init_digest,
        "capacity_ratio": _capacity_ratio(s),
        "teacher_int8": s.teacher.describe() if s.teacher else None,
    }
    meta = student_sidecar(s.config, s.train_set.info, made_by, {"final": final, "best_top1": best})
    if getattr(s.core.student, "model_options", None):  # layers the student keeps (letKD): needed to rebuild it
        meta["model_options"] = s.core.student.model_options
    if s.config.quant.qat:  # the weights are a Q/DQ graph's training state, not the architecture's: say where the model is
        meta["qat"] = {"target": s.config.quant.target, "int8_onnx": f"export/{s.config.name.removesuffix('.qat')}.int8.onnx"}
    return meta


def distill(config: DistillConfig, resume: bool = False, progress: bool = True, teacher: nn.Module | None = None,
            student: nn.Module | None = None, overwrite: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train the student; returns a summary with the final and best accuracy and the artifact paths.

    ``teacher`` / ``student`` are model objects that replace ``config.teacher`` / ``config.student``
    (the Python API); a model without declared points gets them found at the data's input size.
    ``config.out`` must not hold an earlier run unless ``resume`` (continue it) or ``overwrite``
    (replace it) is given; the folder is locked while the run writes.

    Raises:
        UserError: bad config, checkpoints or data (before anything is written), or a diverged loss.
    """
    try:
        online = online_method(config.loss.method)
    except ValueError as e:
        raise UserError(f"loss.method: {e}") from None
    if online is not None and (teacher is not None or student is not None):
        raise UserError(f"{config.loss.method} builds its own cohort: give student.arch as a reference, not a model object")
    if config.quant.qat:
        return _distill_qat(config, resume, progress, teacher, student, overwrite)
    with _claim_run(config, resume, overwrite):
        if online is not None:
            from .online import train_online

            return train_online(config, online, resume=resume, progress=progress)
        return train_models(config, resume, progress, teacher, student)


def train_models(config: DistillConfig, resume: bool, progress: bool, teacher: nn.Module | None, student: nn.Module | None) -> dict:
    """Set up and run one distillation in a claimed folder; the networks leave without the run's hooks."""
    s = setup(config, teacher, student)
    try:
        return _run(s, resume, progress)
    except BaseException:
        if s.world.is_main and not resume and not (s.out / "checkpoints" / "last.pt").exists():
            (s.out / "config.yaml").unlink(missing_ok=True)  # no epoch finished: leave no half-begun run behind
        raise
    finally:  # the networks may be the user's objects: they leave without our hooks
        for term in s.core.objective.terms.values():
            term.close()
        s.core.tap.close()
        if s.teacher is not None:
            s.teacher.tap.close()
        shutdown(s.world)


def _distill_qat(config: DistillConfig, resume: bool, progress: bool, teacher: nn.Module | None, student: nn.Module | None,
                overwrite: bool) -> dict[str, Any]:  # fmt: skip
    """``quant.qat`` (``qat.py``): the float stage into ``OUT/float`` (unless a trained student is
    given), then quantization-aware distillation and the INT8 export; returns the QAD run's summary
    with ``int8`` (file, top-1s, parity)."""
    from compressor.deploy.artifact import ModelArtifact
    from compressor.deploy.export import export_qat

    from .qat import calibration_images, check_qat, qat_about, qat_config, qat_student

    check_qat(config)
    out, name = Path(config.out), config.name
    produces = [f"{name}.qat.pt", f"{name}.qat.json", "export/*", "checkpoints/last.pt", "metrics.jsonl", "config.yaml"]
    with _claim_run(config, resume, overwrite, produces):
        float_summary = None
        if student is None and config.student.checkpoint is None:
            float_config = config.model_copy(update={"quant": QuantConfig(), "out": str(out / "float")}, deep=True)
            float_resume = resume and (out / "float" / "checkpoints" / "last.pt").exists()
            float_summary = distill(float_config, resume=float_resume, progress=progress, teacher=teacher, overwrite=overwrite)
            config = config.model_copy(update={"student": config.student.model_copy(update={"checkpoint": float_summary["weights"]})})
        info = open_dataset(config.data.train, "train").info
        size = tuple(info.input_size)
        float_model = student if student is not None else build_student(config, info.num_classes, size)
        points_at(ensure_points, float_model, size, config.student.points)
        calibration = calibration_images(config)
        graph = qat_student(float_model, calibration, config.quant.target)
        qat_resume = resume and (out / "checkpoints" / "last.pt").exists()  # killed in the float stage: the fine-tuning starts anew
        summary = train_models(qat_config(config), qat_resume, progress, teacher, graph)
        art = ModelArtifact(out / f"{name}.qat.pt", config.student.arch, info.num_classes, size, tuple(info.mean), tuple(info.std),
                            list(info.class_names), float_model.eval(), {"made_by": {"method": config.loss.method}})  # fmt: skip
        eval_spec = config.data.eval or config.data.train
        if _main_process():
            about = qat_about(config.loss.method, config.quant, config.student.checkpoint)
            summary["int8"] = export_qat(graph, art, out / "export", name, config.quant.target, eval_spec, config.quant.eval_samples, about)
        if float_summary is not None:
            summary["float"] = {k: float_summary[k] for k in ("final", "best_top1", "weights")}
        return summary


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _claim_run(config: DistillConfig, resume: bool, overwrite: bool, produces: list[str] | None = None):
    """The run folder, held by the main process (under torchrun the other ranks write nothing there)."""
    if not _main_process():
        return nullcontext(Path(config.out))
    produces = produces or [f"{config.name}.pt", f"{config.name}.json", "checkpoints/last.pt", "metrics.jsonl", "config.yaml"]
    return claim(config.out, produces, "distill", resume=resume, overwrite=overwrite, resumable=True)


def _run(s: Setup, resume: bool, progress: bool) -> dict[str, Any]:
    c, out = s.config, s.out
    total = c.train.init_epochs + c.train.epochs
    if resume and int(_same_run_state(out, c).get("epoch", 0)) >= total:
        finished = artifacts.finished_run(out, c.name)
        if finished is not None:  # nothing left to do: the run stays as it is
            if progress:
                print(f"{out} holds a finished run ({total} epochs): nothing to resume", file=sys.stderr, flush=True)
            return finished
    if s.world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(c, out / "config.yaml")
        for note in s.notes if progress else ():
            print(f"note: {note}", file=sys.stderr, flush=True)
    settings = LoopSettings(out, total, state_fingerprint(c), s.device, s.world, c.train.amp, c.optim.clip_grad, c.train.tensorboard,
                            progress)  # fmt: skip
    fitted = fit(DistillTask(s), settings, resume)
    final, best, metrics_path = fitted.final, fitted.best, out / "metrics.jsonl"
    digests = all_gather(weights_digest(s.core.student), s.world)
    summary: dict[str, Any] = {"final": final, "best_top1": best, "epochs": total, "rank_weight_digests": digests,
                               "ranks_identical": len(set(digests)) == 1, "notes": s.notes}  # fmt: skip
    if s.teacher is not None:
        summary["capacity_ratio"] = _capacity_ratio(s)
    summary.update(_term_reports(s))
    if s.world.is_main:
        weights, sidecar = artifacts.save_student(out, s.core.student, _sidecar(s, final, best, total), name=c.name)
        summary.update(weights=str(weights), sidecar=str(sidecar), metrics=str(metrics_path))
    return summary


def _same_run_state(out: Path, c: DistillConfig) -> dict[str, Any]:
    """The training state ``--resume`` continues, when it is this run's: another student, method, hints,
    data or seed is refused before anything is written, naming what differs (a finished run included:
    it stays as it is).

    Raises:
        UserError: the checkpoint's fingerprint is another run's.
    """
    state = artifacts.load_state(out / "checkpoints" / "last.pt")
    if state.get("fingerprint") == state_fingerprint(c):
        return state
    changes = fingerprint_changes(read_saved_config(out / "config.yaml"), c)
    what = "; ".join(changes[:4]) if changes else "its student, method, hints, data or seed"
    raise UserError(f"--resume: {out} holds a run made with other settings ({what}); resume it with the same settings, "
                    "or start a new run in another --out (or --overwrite this one)")  # fmt: skip


def _teacher_eval_outputs(s: Setup):
    """The teacher's outputs over the eval set, batch by batch."""
    c = s.config
    for batch in eval_loader(s.eval_set, c.data.eval_batch_size, c.data.workers, s.world):
        images, labels, index = _batch_to(batch, s.device, c.train.channels_last)
        outputs = s.teacher(images, labels, index, eager=True)
        outputs.inputs = images  # a method with student parts of its own (the averager's exits) runs the student on them
        yield outputs


def _term_reports(s: Setup) -> dict[str, Any]:
    """Methods with parts of their own (EKD's heads): save them beside the student and report
    them on the eval set (``report``, ``export_state`` and ``state_file`` on the loss)."""
    found = {}
    for name, term in s.core.objective.terms.items():
        if s.teacher is None or term.state_file is None:
            continue
        report = term.report(_teacher_eval_outputs(s))
        if report is None:
            continue
        found[name] = report
        if s.world.is_main:
            artifacts.save_state(s.out / term.state_file, {**term.export_state(), "report": found[name]})
    return found
