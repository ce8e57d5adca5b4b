"""The YAML schema of ``compressor cross-distill`` (every key documented in the example files)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..config import Strict
from ..hints.select import HintConfig
from ..train.config import OptimConfig, QuantConfig

PATH_KEYS = ("data.root", "teacher.checkpoint", "out")  # relative paths resolve against the YAML's folder
REF_KEYS = ("teacher.arch", "student.arch")  # model references: a factory's file resolves like a path
EXAMPLES = Path(__file__).resolve().parent  # detection.example.yaml, recognition.example.yaml


class DataSection(Strict):
    root: str | None = None  # holds pixel/, hevc/ (and labels/) with train/ and test/ inside
    builtin: Literal["plates", "vehicles"] | None = None  # generate this synthetic set into root (or out/data)
    train: int = Field(300, ge=1)  # builtin set sizes
    test: int = Field(100, ge=1)
    seed: int = 0
    qp: int = Field(32, ge=0, le=51)  # HEVC conversion of a builtin set
    variant: str = "prediction"
    encoder: Literal["auto", "x265", "ffmpeg"] = "auto"
    image_size: tuple[Annotated[int, Field(ge=16, le=8192)], Annotated[int, Field(ge=16, le=8192)]] = (96, 128)  # (H, W)
    num_classes: int | None = Field(None, ge=1)  # detection: classes in the labels (read from them when None)


class NetSection(Strict):
    arch: str  # zoo name, or (recognition) a factory reference path/to/file.py:function, which runs that code
    kwargs: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of arch
    points: list[str] | None = None  # module-name globs naming the hint candidates (default: declared or found)
    domain: Literal["pixel", "hevc"]
    checkpoint: str | None = None  # a trained network to use instead of training one (teacher)
    epochs: int = Field(30, ge=0)


class HintSection(HintConfig):
    """Hint selection's section (samples, k, metric, ...: teacher hints chosen by clustering its
    backbone; the thesis uses k = 3 for detection, 4 for recognition) and the hint loss."""

    method: str = "at"  # a feature-distillation loss: at, cc, ft, ... (compressor distill's names)
    weight: float | None = Field(None, ge=0)  # lambda of L = lambda * L_hint + L_task; None: the method's usual weight
    teacher_points: list[int] | None = None  # explicit teacher hints instead of clustering
    student_points: list[int] | None = None  # default: the student point in the teacher hint's stage
    init_epochs: int = Field(0, ge=0)  # initialisation stage (FT's paraphraser) before distillation
    params: dict[str, Any] = Field(default_factory=dict)  # the loss's own parameters (e.g. at: {p: 2})
    adaptor: Literal["conv", "deep"] = "conv"  # DA_i: one 3x3 conv (the thesis' "a convolutional layer") or 3x3-BN-ReLU-1x1


class OptimSection(OptimConfig):
    """``compressor distill``'s optimiser section (``optimizer``, ``lr``, ``schedule``, ...) and the
    batch, the loader and the backbone's learning-rate multiplier."""

    backbone_lr_mult: float = Field(1.0, ge=0)  # the backbone's learning rate = lr * this (0.1 or 1 in the thesis)
    batch_size: int = Field(16, ge=1)
    workers: int = Field(0, ge=0)


class CrossConfig(Strict):
    task: Literal["detection", "recognition"]
    data: DataSection = Field(default_factory=DataSection)
    teacher: NetSection
    student: NetSection
    hints: HintSection = Field(default_factory=HintSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    vanilla: bool = True  # also train the student without hints, for the comparison
    # also train it with the teacher's stage-end hints (when clustering chose other points), to judge the chosen ones
    baseline_hints: bool = True
    quant: QuantConfig = Field(default_factory=QuantConfig)  # qat: the cross student fine-tuned through its INT8 graph
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast: bf16 on CPU or CUDA, fp16 on CUDA with loss scaling
    tensorboard: bool = False
    out: str = "runs/cross"

    @model_validator(mode="after")
    def _data_source(self) -> CrossConfig:
        if self.data.root is None and self.data.builtin is None:
            raise ValueError("data needs a root (pixel/, hevc/, labels/) or builtin: plates | vehicles")
        if self.task == "detection" and self.data.builtin == "vehicles" or self.task == "recognition" and self.data.builtin == "plates":
            raise ValueError(f"builtin data {self.data.builtin!r} does not fit task {self.task!r}")
        if self.quant.qat and self.amp != "off":
            raise ValueError(f"quant.qat: fake quantization needs fp32 (amp is {self.amp}); set amp: off")
        return self
