"""The pipeline config: one YAML for teacher -> hints -> distill -> export -> profile.

``compressor/pipeline/demo.yaml`` is the built-in demo and a commented example. Everything is
validated before any stage runs: pydantic checks types and ranges, ``check_names`` checks
architectures, methods, metrics, backends and dataset specs against their registries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compressor.models import ModelReferenceError, check_reference

from ..config import Strict, load_config
from ..data import DATASETS, parse_spec
from ..deploy.export import ExportOptions
from ..deploy.profile.backends import ProfileOptions
from ..errors import UserError
from ..hints.select import HintConfig
from ..train.config import DataConfig, DataSource, LossConfig, OptimConfig, TrainConfig


class Recipe(OptimConfig):
    """How a network is trained (teacher from scratch, or the student in distillation): the
    optimiser section of ``compressor distill`` (``optimizer`` or ``name``, ``lr``, ``schedule``,
    ``milestones``, ...) with the epochs, batch size and augmentation, defaults as there."""

    epochs: int = Field(TrainConfig.model_fields["epochs"].default, ge=1)
    batch_size: int = Field(DataConfig.model_fields["batch_size"].default, ge=1)
    augment: bool = DataConfig.model_fields["augment"].default

    @property
    def optim(self) -> OptimConfig:
        return OptimConfig(**self.model_dump(include=set(OptimConfig.model_fields)))


class TeacherSpec(Strict):
    checkpoint: str | None = None  # an existing teacher; when null, ``arch`` is trained from scratch with ``recipe``
    arch: str | None = None  # zoo name or factory reference (path/to/file.py:function, runs that code)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of arch
    points: list[str] | None = None  # module-name globs naming the hint candidates (default: declared or found)
    trusted: bool = False
    recipe: Recipe = Field(default_factory=Recipe)

    @model_validator(mode="after")
    def _one_source(self):
        if self.checkpoint is None and self.arch is None:
            raise ValueError("give teacher.checkpoint (an existing teacher) or teacher.arch (to train one)")
        return self


class HintsSpec(HintConfig):
    """Hint selection's section (``compressor.hints.HintConfig``) and whether the pipeline selects."""

    enabled: bool = True  # false: the student uses the baseline (stage-end) hints


class DistillSpec(Strict):
    student: str  # zoo name or factory reference (path/to/file.py:function, runs that code)
    student_kwargs: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of student
    student_points: list[str] | None = None  # module-name globs naming the student's hint candidates
    recipe: Recipe = Field(default_factory=Recipe)
    loss: LossConfig = Field(default_factory=lambda: LossConfig(method="at+kd"))
    init_epochs: int = Field(0, ge=0)


class ExportSpec(ExportOptions):
    """The export stage's section: ``compressor export``'s settings (``ExportOptions``; ``calib``
    defaults to the run's training data), INT8 included unless told not to."""

    int8: bool = True


class ProfileSpec(ProfileOptions):
    """The profile stage's section: ``compressor profile``'s settings (``ProfileOptions``; ``data``
    defaults to the run's evaluation data), the teacher beside the student, and ``e2e`` as a switch."""

    compare_teacher: bool = True
    e2e: bool = False  # also time file -> answer (decode, resize, normalise, infer, answer) on PNGs of test images


class ReportSpec(Strict):
    """What the run report recommends: the most accurate artifact within ``budget_ms`` (batch-1
    latency) on each profiled backend, or, without a budget, the artifacts no other beats on both."""

    budget_ms: float | None = Field(None, gt=0)


class PipelineConfig(Strict):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # one folder under out: no '..', no '/'
    out: str = "runs"  # the run folder is out/name
    seed: int = 0
    seeds: list[int] | None = None  # repeat the distillation with these seeds (the first is the exported student): mean ± std
    device: str = "auto"
    data: DataSource = Field(default_factory=DataSource)  # the data of every training in the run
    teacher: TeacherSpec
    hints: HintsSpec = Field(default_factory=HintsSpec)
    distill: DistillSpec
    # trained beside the distilled student, from the same initial weights, seed and recipe: the student
    # alone (CE only) and, for methods with hint terms, with the teacher's stage-end hints; [] for neither
    compare: list[Literal["vanilla", "baseline-hints"]] = Field(default_factory=lambda: ["vanilla", "baseline-hints"])
    export: ExportSpec = Field(default_factory=ExportSpec)
    profile: ProfileSpec = Field(default_factory=ProfileSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name

    @model_validator(mode="after")
    def _seeds(self):
        if self.seeds is not None and (len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds must be two or more different seeds, got {self.seeds}")
        if len(set(self.compare)) != len(self.compare):
            raise ValueError(f"compare lists a comparison twice: {self.compare}")
        return self


def check_names(c: PipelineConfig) -> None:
    """Registry look-ups pydantic cannot do; every problem is reported at once with key and allowed values."""
    from ..hints.similarity import METRICS
    from ..losses import LOSSES

    problems = []
    if c.teacher.checkpoint is not None and not Path(c.teacher.checkpoint).is_file():
        problems.append(f"  teacher.checkpoint: {c.teacher.checkpoint} does not exist (relative paths start at the YAML's folder)")
    for key, arch in (("teacher.arch", c.teacher.arch), ("distill.student", c.distill.student)):
        try:
            if arch is not None:
                check_reference(arch)
        except ModelReferenceError as e:
            problems.append(f"  {key}: {e}")
    if c.hints.metric not in METRICS:
        problems.append(f"  hints.metric: {METRICS.unknown_message(c.hints.metric)}")
    for name in [m.strip() for m in c.distill.loss.method.split("+") if m.strip() and m.strip() != "ce"]:
        if name not in LOSSES:
            problems.append(f"  distill.loss.method: {LOSSES.unknown_message(name)}")
    try:
        from compressor.deploy.profile.run import BACKENDS

        problems += [f"  profile.backends: {BACKENDS.unknown_message(b)}" for b in c.profile.backends if b not in BACKENDS]
    except ImportError:  # pragma: no cover - deploy is part of the same distribution
        pass
    if any(b < 1 for b in c.profile.batches) or not c.profile.batches:
        problems.append(f"  profile.batches: must be positive batch sizes (got {c.profile.batches})")
    if c.profile.iters < 1 or c.profile.eval_samples < 1 or c.profile.warmup < 0:
        problems.append("  profile.iters and profile.eval_samples must be >= 1, profile.warmup >= 0")
    try:  # the export stage's own checks (opset range, NMS thresholds, INT8 calibration), before anything runs
        ExportOptions(**c.export.model_dump() | {"calib": c.export.calib or c.data.train}).check()
    except UserError as e:
        problems.append(f"  export: {e}")
    for key, spec in (("data.train", c.data.train), ("data.eval", c.data.eval)):
        if spec is not None:
            name = parse_spec(spec)[0]
            if name not in DATASETS:
                problems.append(f"  {key}: {DATASETS.unknown_message(name)}")
    if problems:
        raise UserError("invalid pipeline config:\n" + "\n".join(problems))


PATH_KEYS = ("teacher.checkpoint", "out")
REF_KEYS = ("teacher.arch", "distill.student")  # model references: a factory's file resolves like a path


def load_pipeline_config(path: str | Path | None, overrides: list[str] = (), extra: dict[str, Any] | None = None) -> PipelineConfig:
    """The one config loader (``compressor.config.load_config``), then the registry look-ups."""
    config = load_config(PipelineConfig, path, extra, overrides, PATH_KEYS, "pipeline config", REF_KEYS)
    check_names(config)
    return config
