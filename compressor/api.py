"""The Python API: each stage as one function that takes model objects as well as names and paths.

    from compressor import api

    plan = api.select_hints(my_teacher, "cifar100:data/cifar-100-python", "runs/hints", k=3)
    run = api.distill(teacher=my_teacher, student="resnet8x4", data="cifar100:...", method="at+kd",
                      hints="runs/hints/plan.json", epochs=240, out="runs/r8x4")
    files = api.export(run["weights"], "runs/export", int8=True, calib="cifar100:...")
    report = api.profile(files["onnx"], "runs/profile", data="cifar100:...")

A model object without declared hint points gets them found from its graph at the data's input
size (``compressor.models.attach_points``). An output folder that already holds this kind of
run is refused unless ``overwrite=True`` (``resume=True`` continues a distillation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import STUDENT_SCHEMA, in_memory, object_reference
from .config import validate
from .errors import UserError
from .hints.plan import HintPlan
from .hints.select import HintConfig
from .hints.select import select_hints as _select_hints
from .outdir import claim

# what profile writes into its folder (an earlier report there is refused unless overwrite)
REPORT_FILES = ["report.json", "report.md", "report.html", "*.png", "exports/*", "e2e_images/*"]


def select_hints(
    teacher: str | Path | nn.Module, data: str, out: str | Path, *, arch: str | None = None, kwargs: dict[str, Any] | None = None,
    points: list[str] | None = None, trusted: bool = False, device: str = "cpu", progress: bool = False, overwrite: bool = False,
    **settings: Any,
) -> HintPlan:  # fmt: skip
    """Cluster the teacher's sub-blocks and write ``out/plan.json`` + ``out/similarity.png``.

    Args:
        teacher: checkpoint file or model object.
        data: dataset spec (its train split supplies the N samples).
        out: output folder.
        arch, kwargs, points: the checkpoint's architecture reference, its keyword arguments and
            candidate globs (see ``compressor select-hints --help``).
        settings: ``HintConfig`` fields: ``k``, ``metric``, ``samples``, ``position``, ``preact``, ...
    """
    unknown = sorted(set(settings) - set(HintConfig.model_fields))
    if unknown:
        raise UserError(
            f"select_hints: unexpected keyword argument(s) {', '.join(unknown)}; settings are {', '.join(HintConfig.model_fields)}"
        )
    config = validate(HintConfig, settings, "select_hints settings")
    return _select_hints(teacher, data, out, config, arch=arch, trusted=trusted, device=device, progress=progress,
                         kwargs=kwargs, points=points, overwrite=overwrite)  # fmt: skip


def distill(
    *, student: str | nn.Module, data: str, out: str | Path, teacher: str | Path | nn.Module | None = None, method: str = "at+kd",
    hints: str | Path | None = None, epochs: int | None = None, teacher_arch: str | None = None,
    student_kwargs: dict[str, Any] | None = None, settings: dict[str, Any] | None = None, resume: bool = False, progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train ``student`` against ``teacher``; returns the run summary (``weights``, ``sidecar``, ``final``, ...).

    Args:
        student: a model reference (zoo name, ``file.py:function``) or a model object.
        data: dataset spec.
        out: run folder.
        teacher: checkpoint file or model object (None with ``method='ce'``).
        method: loss terms joined by ``+`` (``at+kd``, ``crd+kd``, ...).
        hints: ``plan.json`` from ``select_hints``.
        epochs: distillation epochs.
        teacher_arch: the teacher checkpoint's architecture reference when it cannot be inferred.
        student_kwargs: keyword arguments of a student reference.
        settings: any other config value by dotted key, e.g. ``{"optim.lr": 0.01, "loss.params": {"kd": {"T": 4}}}``.
    """
    from .train import distill as _distill
    from .train import load_distill_config

    teacher_obj = teacher if isinstance(teacher, nn.Module) else None
    student_obj = student if isinstance(student, nn.Module) else None
    flags: dict[str, Any] = {
        "student.arch": object_reference(student) if student_obj is not None else student,
        "student.kwargs": student_kwargs,
        "data.train": data,
        "loss.method": method,
        "hints.plan": str(hints) if hints else None,
        "train.epochs": epochs,
        "out": str(out),
    }
    if teacher is not None and teacher_obj is None:
        flags.update({"teacher.checkpoint": str(teacher), "teacher.arch": teacher_arch})
    flags.update(settings or {})
    config = load_distill_config(None, flags)
    return _distill(config, resume=resume, progress=progress, teacher=teacher_obj, student=student_obj, overwrite=overwrite)


def export(
    model: str | Path | nn.Module, out: str | Path, *, input_size: tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None, stem: str = "model", overwrite: bool = False, arch: str | None = None, trusted: bool = False,
    **options: Any,
) -> dict[str, Path]:  # fmt: skip
    """Export to ONNX (checked against PyTorch) and, with ``int8=True, calib=SPEC``, INT8 Q/DQ.

    Args:
        model: a student artifact, a checkpoint, an ``.onnx`` file, or a model object (then
            ``input_size`` is required; ``mean``/``std`` are recorded in the sidecar).
        out: output folder.
        options: ``ExportOptions`` fields: ``int8``, ``calib``, ``fp16``, ``trt``, ``opset``, ...
        arch: the architecture of a checkpoint (a factory reference its sidecar records is code, and is
            honoured only when named here or with ``trusted``).
        trusted: trust the file: full unpickling, and the factory reference its sidecar names.

    Returns:
        ``{kind: path}`` of the written files (``onnx``, ``int8``, ...).
    """
    from .deploy.artifact import load_artifact
    from .deploy.export import ExportOptions, export_artifact

    art = (_artifact(model, out, input_size, mean, std) if isinstance(model, nn.Module)
           else load_artifact(model, arch=arch, trusted=trusted, input_size=input_size))  # fmt: skip
    opts = validate(ExportOptions, options, "export settings")
    produces = [f"{stem}.onnx", f"{stem}.*.onnx", f"{stem}.json", f"{stem}.*.json", f"{stem}.*.md", f"{stem}.*.png", "*.plan"]
    with claim(out, produces, "export", overwrite=overwrite):
        return export_artifact(art, out, opts, stem=stem).files


def profile(
    model: str | Path | nn.Module,
    out: str | Path,
    *,
    compare: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    overwrite: bool = False,
    arch: str | None = None,
    trusted: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Profile every backend that applies to ``model`` and write ``report.json/.md/.html`` under ``out``.

    Args:
        model: a student artifact, a checkpoint, any ``.onnx`` file, or a model object (then
            ``input_size`` is required; its weights are saved as ``out/model.pt`` + ``model.json``).
        options: ``ProfileOptions`` fields: ``backends``, ``batches``, ``data``, ``iters``, ...
        arch: the architecture of a checkpoint (a factory reference its sidecar records is code, and is
            honoured only when named here or with ``trusted``).
        trusted: trust the file: full unpickling, and the factory reference its sidecar names.

    Returns:
        The report dict (also written as ``out/report.json``).
    """
    from .deploy.profile.report import write_reports
    from .deploy.profile.run import ProfileOptions, profile_models

    source = {"input_size": input_size, "mean": mean, "std": std}
    opts = validate(ProfileOptions, {"progress": False, "trusted": trusted, **options}, "profile settings")
    with claim(out, [*REPORT_FILES, "model.pt"], "profile", overwrite=overwrite):
        if isinstance(model, nn.Module):  # profiled as it is in memory; its weights are saved for the file size
            model = _artifact(model, out, input_size, mean, std)
            _save_object(model, Path(out))
        report = profile_models(model, out, opts, compare=compare, arch=arch, trusted=trusted, source=source)
        write_reports(report, Path(out))
    return report


def report(run_dir: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write ``run_dir/report.html`` and ``report.md`` telling a whole run (``compressor report``)."""
    from .report import write_run_report

    return write_run_report(run_dir, overwrite=overwrite)


def _artifact(model: nn.Module, out: str | Path, input_size, mean, std):
    from .deploy.artifact import NO_MEAN, NO_STD, ModelArtifact

    if input_size is None:
        raise UserError("a model object needs input_size=(H, W)")
    loaded = in_memory(model)
    return ModelArtifact(Path(out) / "model.pt", loaded.arch, loaded.num_classes, tuple(input_size), tuple(mean or NO_MEAN),
                         tuple(std or NO_STD), model=model.eval(), meta={"digest": ""})  # fmt: skip


def _save_object(art, out: Path) -> Path:
    """A model object as a student artifact under ``out`` (weights + sidecar)."""
    from .train.artifacts import save_student

    out.mkdir(parents=True, exist_ok=True)
    sidecar = {"schema": STUDENT_SCHEMA, "version": 1, "arch": art.arch, "arch_kwargs": getattr(art.model, "arch_kwargs", {}),
               "num_classes": art.num_classes, "input_size": list(art.input_size),
               "mean": list(art.mean), "std": list(art.std)}  # fmt: skip
    weights, _ = save_student(out, art.model, sidecar, name="model")
    return weights
