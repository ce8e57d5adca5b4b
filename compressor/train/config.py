"""The distillation config: one YAML file, sections below; ``distill.example.yaml`` is commented."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from ..config import Strict, load_config


class TeacherConfig(Strict):
    checkpoint: str  # teacher checkpoint file
    arch: str | None = None  # zoo name or factory reference (file.py:function); inferred from the checkpoint when None
    kwargs: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of a factory (or zoo model)
    points: list[str] | None = None  # module-name globs naming the hint candidates (default: declared or found)
    trusted: bool = False  # allow full unpickling (only for files you trust)
    ensemble: list[str] = Field(default_factory=list)  # more teacher checkpoints: logits averaged with the teacher's


class StudentConfig(Strict):
    arch: str  # zoo name, or factory reference path/to/file.py:function | package.module:function (runs that code)
    kwargs: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the factory (or zoo model)
    points: list[str] | None = None  # module-name globs naming the hint candidates (default: declared or found)
    checkpoint: str | None = None  # start from these weights instead of from scratch


class DataSource(Strict):
    """Which data: the pipeline's ``data:`` section, and the part of ``DataConfig`` that says it."""

    train: str = "synthetic"  # dataset spec: synthetic | cifar10:PATH | cifar100:PATH | imagefolder:PATH
    eval: str | None = None  # evaluation spec; default: the train spec's test split
    workers: int = Field(0, ge=0)  # loader worker processes


class DataConfig(DataSource):
    """The data and how a training reads it."""

    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    augment: bool = True  # reflect-pad 4 + random crop + horizontal flip


class HintsConfig(Strict):
    plan: str | None = None  # plan.json from select-hints
    teacher: list[int] | Literal["baseline"] | None = None  # explicit 1-based indices; default: the plan's, else baseline
    student: list[int] | None = None  # default: the student's stage ends, matched in order
    preact: bool | None = None  # default: the plan's setting, else post-activation

    @field_validator("teacher", "student")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, list) and (not v or min(v) < 1):
            raise ValueError("hint indices are 1-based and the list must not be empty")
        return v


class Ramp(Strict):
    """A term weight that moves linearly from ``start`` (first epoch) to ``end`` at ``until`` of the
    distillation epochs and stays there: w(e) = end + (start - end) * max(1 - e / (until * E), 0) at
    1-based epoch e of E (the form BSS's authors use for their KD and BSS weights)."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)
    until: float = Field(1.0, gt=0, le=1)


class LossConfig(Strict):
    method: str = "kd"  # e.g. at+kd, crd+at+kd, wsl+at; 'ce' alone trains without a teacher signal
    gamma: float = Field(1.0, ge=0)  # weight of the cross-entropy term
    alpha: float | None = Field(None, ge=0)  # weight of logit terms (default: each method's)
    beta: float | None = Field(None, ge=0)  # weight of hint terms (default: each method's)
    weights: dict[str, float] = Field(default_factory=dict)  # per-term weights by name
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-term parameters, e.g. {kd: {T: 4}}
    schedules: dict[str, Ramp] = Field(default_factory=dict)  # per-term weight ramps by name (ce too), e.g. {kd: {start: 4, end: 1}}


class OptimConfig(Strict):
    """The optimiser and its schedule: the one section for them (distill's ``optim``, the pipeline's
    recipes and cross distillation's ``optim`` extend it)."""

    name: Literal["sgd", "adamw"] = Field("sgd", validation_alias=AliasChoices("name", "optimizer"))
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])  # epochs (of distillation) where lr *= decay
    decay: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)  # linear lr warm-up
    clip_grad: float | None = Field(None, gt=0)  # max global gradient norm


class TrainConfig(Strict):
    epochs: int = Field(240, ge=1)  # distillation epochs
    init_epochs: int = Field(0, ge=0)  # initialisation stage first (FitNet stage 1, FT paraphraser, AB)
    amp: Literal["off", "bf16", "fp16"] = "off"  # fp16 needs CUDA
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = False
    compile_teacher: bool = False  # torch.compile the frozen teacher, BN folded (pays a compile once)
    compile_student: bool = False  # torch.compile the student's training forward (evaluation stays eager)
    teacher_int8: bool = False  # run the teacher as INT8 on ONNX Runtime (CPU; approximate, checked: train/teacher.py)
    int8_calibration: int = Field(512, ge=1)  # training images the INT8 teacher is calibrated on
    int8_min_agreement: float = Field(0.95, ge=0, le=1)  # refuse an INT8 teacher whose top-1 agrees less with fp32's
    tensorboard: bool = True  # also log to TensorBoard when it is installed


class QuantConfig(Strict):
    """Quantization-aware distillation (``quant.qat``): the student fine-tuned through the Q/DQ
    graph it is exported as, against the fp32 teacher and the run's losses."""

    qat: bool = False
    target: Literal["cpu", "tensorrt"] = "cpu"  # cpu: ONNX Runtime (uint8 activations); tensorrt: int8 symmetric
    epochs: int = Field(10, ge=1)  # fine-tuning epochs with fake quantization (the float stage takes train.epochs)
    lr: float = Field(1e-4, gt=0)  # the fine-tuning's AdamW learning rate (cosine to 0, no weight decay; optim.clip_grad applies)
    calibration: int = Field(512, ge=1)  # training images the initial activation steps are calibrated on
    eval_samples: int = Field(1000, ge=1)  # held-out images for the INT8 accuracy and the ONNX Runtime parity


class DistillConfig(Strict):
    teacher: TeacherConfig | None = None  # None: plain training with method 'ce' (e.g. of a teacher)
    student: StudentConfig
    data: DataConfig = Field(default_factory=DataConfig)
    hints: HintsConfig = Field(default_factory=HintsConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    out: str = "runs/distill"
    name: str = Field("student", pattern=r"^[A-Za-z0-9._-]+$")  # artifact file names: <name>.pt, <name>.json

    @model_validator(mode="after")
    def _consistent(self):
        if self.train.amp == "fp16" and self.train.device == "cpu":
            raise ValueError("train.amp: fp16 needs a CUDA device; use bf16 on CPU")
        if self.train.teacher_int8 and self.train.compile_teacher:
            raise ValueError("train.teacher_int8 and train.compile_teacher are alternatives for the teacher's forward; pick one")
        if self.train.teacher_int8 and self.train.device.startswith("cuda"):
            raise ValueError("train.teacher_int8 runs the teacher on the CPU (ONNX Runtime's integer kernels); on CUDA use train.amp")
        return self


REF_KEYS = ("teacher.arch", "student.arch")  # model references: a factory's file resolves like a path
PATH_KEYS = ("teacher.checkpoint", "loss.params.ekd.heads", "student.checkpoint", "hints.plan", "out")


def load_distill_config(path: str | Path | None = None, flags: dict[str, Any] | None = None, overrides: list[str] = ()) -> DistillConfig:
    """YAML file (optional) <- flags (dotted keys, None = not given) <- ``--set`` overrides."""
    return load_config(DistillConfig, path, flags, overrides, PATH_KEYS, "distillation config", REF_KEYS)
