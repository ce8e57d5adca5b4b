"""``export_artifact``: a student (or any zoo checkpoint) -> ONNX, INT8 Q/DQ ONNX, FP16 ONNX, TensorRT plan.

A thin coordinator over ``FORMATS``, the one registry of export formats (its name, the file name
after the stem, when it is wanted, whether it needs the PyTorch model, and its builder, which
post-checks what it wrote: parity for ONNX, the accuracy change for INT8). ``export``, ``profile``
and the pipeline all read it. Every file gets a JSON sidecar.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from compressor.models import Registry, hint_points
from pydantic import Field
from torch import nn
from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
from torch.utils.data import DataLoader, Subset

from compressor import __version__
from compressor.config import Strict
from compressor.data import fit_to, open_dataset
from compressor.detection.data import DetectionFolder
from compressor.detection.data import collate as detection_collate
from compressor.errors import UserError
from compressor.io import atomic_write, atomic_write_json, file_digest

from ..artifact import EXPORT_SCHEMA, ModelArtifact, is_detector, is_qdq
from ..profile.accuracy import accuracy, agreement, predict
from ..runtime.ort_runtime import OrtRuntime
from .detection import DetectorExport
from .int8 import fp16_islands, quantizable_layers, quantize_qdq
from .onnx_export import export_onnx, torch_to_onnx
from .sensitivity import analyse, make_probe, report_path


class ExportOptions(Strict):
    """Export settings: ``compressor export``'s flags, the API's keyword arguments and the pipeline's
    ``export:`` section (which extends this one). ``check`` says what is wrong in the flags' terms."""

    opset: int = 17
    dynamic_batch: bool = True
    dynamo: bool = False
    int8: bool = False
    calib: str | None = None  # dataset spec for INT8 calibration (its train split)
    calib_samples: int = 512
    eval_samples: int = 1000  # for the INT8 accuracy change (the calibration spec's test split)
    fp16: bool = False
    trt: bool = False
    trt_precision: str = "fp16"
    nms: bool = False  # detectors: NonMaxSuppression inside the graph (else boxes + scores only)
    nms_iou: float = 0.45
    nms_score: float = 0.25
    nms_max: int = 100  # boxes kept per class and image
    sensitivity: bool = False  # INT8: per-layer sensitivity next to each INT8 file (cpu and tensorrt targets)
    int8_budget: float | None = None  # INT8: max top-1 (detector: AP50) drop in points; sensitive layers stay float (TensorRT: FP16)
    int8_max_float: int | None = None  # at most this many float layers for the budget
    int8_float: list[str] = Field(default_factory=list)  # INT8: layers kept float always (names as the sensitivity table gives them)

    def check(self, art: ModelArtifact | None = None) -> None:
        """Every option and the inputs it names, before anything is written.

        Raises:
            UserError: an opset the exporter cannot write, NMS thresholds outside their range, INT8
                without usable calibration data, TensorRT asked for where it cannot run.
        """
        low, high = (18, ONNX_MAX_OPSET) if self.dynamo else (13, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
        if not low <= self.opset <= high:
            exporter = "the dynamo exporter (--dynamo)" if self.dynamo else "the default exporter"
            raise UserError(f"--opset {self.opset}: {exporter} writes opsets {low} to {high} (Q/DQ INT8 needs >= 13); default 17")
        if not 0 < self.nms_iou <= 1:
            raise UserError(f"--nms-iou {self.nms_iou}: an IoU threshold lies in (0, 1]; default 0.45")
        if not 0 < self.nms_score < 1:
            raise UserError(f"--nms-score {self.nms_score}: a score threshold lies in (0, 1); default 0.25")
        if self.nms_max < 1:
            raise UserError(f"--nms-max {self.nms_max}: keep at least one box per class and image; default 100")
        if self.int8_budget is not None and self.int8_budget < 0:
            raise UserError(
                f"--int8-budget {self.int8_budget}: the allowed drop (top-1, or AP50 for a detector) is in points, >= 0 (e.g. 0.5)"
            )
        if self.int8_max_float is not None and self.int8_max_float < 0:
            raise UserError(f"--int8-max-float {self.int8_max_float}: a number of layers, >= 0")
        if (self.sensitivity or self.int8_budget is not None or self.int8_float) and not (
            self.int8 or self.trt and self.trt_precision == "int8"
        ):
            raise UserError("--sensitivity, --int8-budget and --int8-float shape the INT8 export: add --int8 (with --calib), or "
                            "--trt --trt-precision int8 for TensorRT (layers kept out of INT8 run in FP16)")  # fmt: skip
        if self.calib_samples < 1:
            raise UserError(f"--calib-samples {self.calib_samples}: calibrate on at least one image (a few hundred is typical)")
        if self.trt_precision not in ("fp32", "fp16", "int8"):
            raise UserError(f"--trt-precision {self.trt_precision!r}: one of fp32, fp16, int8")
        int8 = self.int8 or (self.trt and self.trt_precision == "int8")
        if int8 and not self.calib:
            raise UserError("INT8 needs calibration data: --calib SPEC (e.g. the training set, a few hundred images)")
        if int8 and art is not None and is_detector(art):
            for split in ("train", "test"):  # images found and labels read before anything is written
                open_calibration(self.calib, split, art)
        elif int8 and art is not None:
            data = open_dataset(self.calib, "train")
            # 0: a foreign ONNX that does not say; another image size is resized to the model's (export_int8, noted)
            if art.num_classes and data.info.num_classes != art.num_classes:
                raise UserError(f"calibration data {self.calib} has {data.info.num_classes} classes but the model {art.num_classes}: "
                                "calibrate on the model's own data")  # fmt: skip
        if self.trt:
            from ..tensorrt.build import gpu_identity, import_tensorrt

            import_tensorrt()
            gpu_identity()


@dataclass
class ExportResult:
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Format:
    """One export format. ``build(art, options, files, path)`` writes ``path`` from the formats built
    before it (``files``, by name) and returns ``(path, info for ExportResult.info or None)``."""

    name: str
    suffix: str  # the file name after the stem (a TensorRT plan is named by the builder: GPU and version)
    wanted: Callable[[ExportOptions], bool]
    needs_model: bool  # made from the PyTorch model (not from an ONNX file)
    build: Callable[[ModelArtifact, ExportOptions, dict[str, Path], Path], tuple[Path, dict[str, Any] | None]]

    def path(self, out: Path, stem: str) -> Path:
        return out / f"{stem}{self.suffix}"


def _build_onnx(art: ModelArtifact, options: ExportOptions, files: dict[str, Path], path: Path) -> tuple[Path, dict[str, Any] | None]:
    if art.model is None:  # an ONNX file is the fp32 model itself
        return art.path, None
    model, extra = art.model, {}
    if is_detector(art):
        model = DetectorExport(model, options.nms, options.nms_iou, options.nms_score, options.nms_max)
        extra = {"outputs": list(model.output_names), "nms": options.nms and {"iou": options.nms_iou, "score": options.nms_score,
                                                                             "max_per_class": options.nms_max}}  # fmt: skip
    parity = export_onnx(model, path, art.input_size, options.opset, options.dynamic_batch, options.dynamo)
    _sidecar(path, art, options, precision="fp32", extra={"parity": vars(parity), **extra})
    return path, vars(parity)


def _build_int8(target: str):
    return lambda art, options, files, path: export_int8(files["onnx"], art, options, path, target)


def _build_fp16(art: ModelArtifact, options: ExportOptions, files: dict[str, Path], path: Path) -> tuple[Path, None]:
    return _fp16(art, path, options), None


def _build_trt(art: ModelArtifact, options: ExportOptions, files: dict[str, Path], path: Path) -> tuple[Path, None]:
    from ..tensorrt.build import build_engine

    source = files["int8-trt"] if options.trt_precision == "int8" else files["onnx"]
    return build_engine(source, path.parent, precision=options.trt_precision), None


FORMATS: Registry[Format] = Registry("export format")  # in build order: later formats are made from earlier ones
for _format in (
    Format("onnx", ".onnx", lambda o: True, False, _build_onnx),
    Format("int8", ".int8.onnx", lambda o: o.int8, False, _build_int8("cpu")),
    Format("int8-trt", ".int8-trt.onnx", lambda o: o.trt and o.trt_precision == "int8", False, _build_int8("tensorrt")),
    Format("fp16", ".fp16.onnx", lambda o: o.fp16, True, _build_fp16),
    Format("trt", ".plan", lambda o: o.trt, False, _build_trt),
):
    FORMATS.register(_format.name, _format)


def wanted_formats(options: ExportOptions) -> list[Format]:
    return [f for f in (FORMATS.get(n) for n in FORMATS.names()) if f.wanted(options)]


def check_export(art: ModelArtifact, options: ExportOptions) -> None:
    """What this model can be exported to, before anything is written (the one detector check)."""
    if is_detector(art) and (options.fp16 or options.dynamo):
        raise UserError("detectors export through the default exporter as fp32 or INT8 ONNX (and TensorRT from them); "
                        "--fp16 and --dynamo are for classifiers so far")  # fmt: skip
    if options.nms and not is_detector(art):
        raise UserError(f"--nms is for detectors; {art.arch or art.path.name} is a classifier")
    if art.model is None:  # an ONNX file: only what can be made from it
        if options.fp16 or options.dynamo or options.nms:
            raise UserError(f"{art.path.name} is an ONNX file: --fp16, --dynamo and --nms need the PyTorch model (a checkpoint)")
        if not (options.int8 or options.trt):
            raise UserError(f"{art.path.name} is already ONNX: add --int8 (with --calib) or --trt to build from it")
        if is_qdq(art.path) and options.int8:
            raise UserError(f"{art.path.name} is already INT8 (Q/DQ); give the fp32 ONNX file")
    options.check(art)
    if options.int8_float:  # the layer names are the exported graph's: checked on a throwaway export
        with tempfile.TemporaryDirectory() as tmp:
            _forced_float(_build_onnx(art, options, {}, Path(tmp) / "names.onnx")[0], options.int8_float)


def export_artifact(art: ModelArtifact, out: str | Path, options: ExportOptions, stem: str = "student") -> ExportResult:
    """Write ``out/<stem>.onnx`` (+ .int8.onnx for CPU runtimes, .int8-trt.onnx and a plan for
    TensorRT, .fp16.onnx) with sidecars. An ``.onnx`` artifact (any ONNX file) is the fp32 model
    itself: its INT8 forms and TensorRT engine are built from it."""
    check_export(art, options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult()
    for fmt in wanted_formats(options):
        result.files[fmt.name], info = fmt.build(art, options, result.files, fmt.path(out, stem))
        if fmt.name == "onnx" or info is not None:
            result.info["parity" if fmt.name == "onnx" else fmt.name] = info
    return result


def _sidecar(path: Path, art: ModelArtifact, options: ExportOptions, precision: str, extra: dict[str, Any] | None = None) -> None:
    meta = {
        "schema": EXPORT_SCHEMA,
        "version": 1,
        "arch": art.arch,
        "num_classes": art.num_classes,
        "input_size": list(art.input_size),
        "mean": list(art.mean),
        "std": list(art.std),
        "class_names": art.class_names,
        "precision": precision,
        "opset": options.opset,
        "dynamic_batch": options.dynamic_batch,
        "exporter": "dynamo" if options.dynamo else "torchscript",
        "source": str(art.path),
        "source_digest": art.meta.get("digest"),
        "made_by": art.meta.get("made_by"),
        "tool_version": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "digest": file_digest(path),
        **(extra or {}),
    }
    atomic_write_json(path.with_suffix(".json"), meta)


def open_calibration(spec: str, split: str, art: ModelArtifact):
    """The data INT8 is calibrated (train split) and scored (test split) on: the dataset ``spec``
    names, or for a detector a labelled YOLO-layout folder ``yolo:PATH`` read at the model's input
    size, mean and std.

    Raises:
        UserError: a detector given anything else, or a folder without images or labels.
    """
    if not is_detector(art):
        return open_dataset(spec, split)
    name, _, root = spec.partition(":")
    if name != "yolo" or not root:
        raise UserError(f"--calib {spec}: a detector is calibrated and scored (AP50) on labelled images: --calib yolo:PATH, PATH "
                        "holding images/{train,val}/ and labels/{train,val}/ with YOLO text labels (a cross-distillation run's "
                        "data/ folder, with pixel/ for images/, works as it is)")  # fmt: skip
    return DetectionFolder(root, split, tuple(art.input_size), tuple(art.mean), tuple(art.std), art.num_classes or None)


def calibration_indices(size: int, samples: int) -> list[int]:
    """Which items calibrate: ``samples`` of ``size`` in a fixed random order (seed 0), not the first ones
    (an image folder lists its classes one after another)."""
    return np.random.default_rng(0).permutation(size)[:samples].tolist()


def _calibration_items(data, samples: int) -> dict[str, list]:
    """What calibrated, for a user to check its split and sampling: the image files (an image folder),
    else the item indices of the dataset that was read."""
    chosen = calibration_indices(len(data), samples)
    files = getattr(data, "samples", None)
    if isinstance(files, list) and files and isinstance(files[0], tuple):
        return {"files": [str(files[i][0]) for i in chosen]}
    return {"indices": chosen}


def calibration_batches(data, samples: int, batch: int = 32, split: str = "train") -> Iterator[np.ndarray]:
    """Up to ``samples`` images of ``data`` (a dataset, or a spec whose ``split`` is opened) in a fixed random order."""
    data = open_dataset(data, split) if isinstance(data, str) else data
    idx = calibration_indices(len(data), samples)
    collate = detection_collate if isinstance(data, DetectionFolder) else None
    for images, *_ in DataLoader(Subset(data, idx), batch_size=batch, shuffle=False, collate_fn=collate):
        yield images.numpy()


def _graph_batch(path: Path) -> int | None:
    """The fixed batch size of an ONNX graph's image input, None when it is dynamic."""
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


def export_int8(fp32: Path, art: ModelArtifact, options: ExportOptions, path: Path, target: str) -> tuple[Path, dict[str, Any]]:
    """Quantise ``fp32`` for ``target`` (``cpu`` or ``tensorrt``), calibrated on ``options.calib``'s
    train split; returns the file and its top-1 (a detector: AP50) change on the test split."""
    options.check(art)
    forced = _forced_float(fp32, options.int8_float)
    train, evaluation = open_calibration(options.calib, "train", art), open_calibration(options.calib, "test", art)
    resized = [note for data in (train, evaluation) if not is_detector(art) and (note := fit_to(data, art.input_size))]
    batch = _graph_batch(fp32) or 32  # a graph with a fixed batch is calibrated at that batch
    quantize_qdq(fp32, path, calibration_batches(train, options.calib_samples, batch), target=target, keep_float=forced)
    if target == "tensorrt" and forced:
        fp16_islands(path, forced)
    probe = make_probe(fp32, *_held_out(evaluation, options.eval_samples)) if is_detector(art) else None
    analysis = None
    if options.sensitivity or options.int8_budget is not None:  # each target's own sweep: its Q/DQ scheme differs
        probe = probe or make_probe(fp32, *_held_out(evaluation, options.eval_samples))
        points = [("model." if is_detector(art) else "") + name for name in _hint_point_names(art.model)]  # DetectorExport's .model
        analysis = analyse(fp32, path, lambda: calibration_batches(train, options.calib_samples, batch), probe, options.int8_budget,
                           options.int8_max_float, target, points, forced)  # fmt: skip
    change = {
        **(_ap50_change(probe, path) if is_detector(art) else _top1_change(fp32, path, evaluation, options.eval_samples)),
        "target": target,
        "calibration": {
            "data": options.calib,
            "samples": options.calib_samples,
            **_calibration_items(train, options.calib_samples),
            "method": "minmax; weights per-channel symmetric",
            "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
        },  # fmt: skip
    }
    if forced:
        change["float_layers_forced"] = forced
    if resized:
        change["calibration"]["resized"] = resized[0]
    if analysis is not None:
        change["sensitivity"] = report_path(path, ".json").name
        change["fallback"] = analysis.get("fallback")
    _sidecar(path, art, options, precision="int8", extra={"int8": change})
    return path, change


def _forced_float(fp32: Path, names: list[str]) -> list[str]:
    """``--int8-float``'s layers, checked against the graph's quantizable layers (before any INT8 file is written)."""
    if not names:
        return []
    layers = [name for name, _ in quantizable_layers(fp32)]
    unknown = [n for n in names if n not in layers]
    if unknown:
        shown = ", ".join(layers[:6]) + (f", ... ({len(layers)} in all)" if len(layers) > 6 else "")
        raise UserError(f"--int8-float: no quantizable layer named {', '.join(unknown)} in {fp32.name}; its layers are {shown} "
                        "(--sensitivity writes them all, in forward order, to <stem>.int8.sensitivity.md)")  # fmt: skip
    return list(dict.fromkeys(names))


def export_qat(graph, art: ModelArtifact, out: Path, stem: str, target: str, evaluation, eval_samples: int,
               about: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A quantization-aware run's models: ``<stem>.onnx`` (the float student ``art``) and
    ``<stem>.int8.onnx`` written from ``graph``'s learned weights and steps (a ``QdqGraph``; no
    recalibration), with both top-1s on ONNX Runtime and the parity of ``graph`` with ONNX Runtime.
    ``evaluation``: a dataset spec (its test split), a dataset of (normalised image, class, index),
    or for a detector one of labelled images (``detection`` true, ``truth(i)``; scored by AP50)."""
    from .qdq_graph import ort_parity

    options = ExportOptions()
    out.mkdir(parents=True, exist_ok=True)
    fp32, _ = _build_onnx(art, options, {}, out / f"{stem}.onnx")
    path = graph.write_onnx(out / f"{stem}.int8.onnx")
    evaluation = open_dataset(evaluation, "test") if isinstance(evaluation, str) else evaluation
    if getattr(evaluation, "detection", False):  # a detector's labelled images
        scores = _ap50_change(make_probe(fp32, *_held_out(evaluation, eval_samples)), path)
    else:
        scores = _top1_change(fp32, path, evaluation, eval_samples)
    change = {**scores, "target": target,
              "calibration": {"data": "learned during quantization-aware training", "method": "qat"}, "qat": about,
              "parity": ort_parity(graph, path, _held_out(evaluation, min(eval_samples, 256))[0])}  # fmt: skip
    _sidecar(path, art, options, precision="int8", extra={"int8": change})
    return {"file": str(path), **change}


def _top1_change(fp32: Path, int8: Path, evaluation, limit: int) -> dict[str, Any]:
    """Both models' top-1 on ONNX Runtime over the first ``limit`` evaluation images, and their agreement."""
    ref_logits, labels = predict(OrtRuntime(fp32), evaluation, limit=limit)
    q_logits, _ = predict(OrtRuntime(int8), evaluation, limit=limit)
    before, after = accuracy(ref_logits, labels), accuracy(q_logits, labels)
    return {"fp32_top1": before["top1"], "int8_top1": after["top1"], "top1_change": after["top1"] - before["top1"],
            "top1_agreement": agreement(ref_logits, q_logits), "samples": before["samples"]}  # fmt: skip


def _ap50_change(probe, int8: Path) -> dict[str, Any]:
    """A detector's AP50 on ONNX Runtime before and after INT8, over the probe's held-out images."""
    score = probe.score(int8)
    return {"fp32_AP50": probe.fp32, "int8_AP50": score["AP50"], "AP50_change": score["AP50"] - probe.fp32,
            "detection_agreement": score["agreement"], "score_sqnr_db": score["sqnr_db"], "samples": len(probe.images)}  # fmt: skip


def int8_summary(change: dict[str, Any]) -> str:
    """One line for an INT8 file's accuracy change (top-1, or AP50 for a detector)."""
    if "fp32_AP50" in change:
        agree = change["detection_agreement"]
        return (f"AP50 {change['fp32_AP50']:.2f} -> {change['int8_AP50']:.2f} ({change['AP50_change']:+.2f}), AP50 against the fp32 "
                f"detections {'-' if agree is None else f'{agree:.2f}'} on {change['samples']} images")  # fmt: skip
    return (f"top-1 {change['fp32_top1']:.2f}% -> {change['int8_top1']:.2f}% ({change['top1_change']:+.2f}), "
            f"top-1 agreement {change['top1_agreement']:.2f}% on {change['samples']} samples")  # fmt: skip


def _hint_point_names(model: nn.Module | None) -> list[str]:
    """The hint points' module paths (none for an ONNX file or a model without points)."""
    if model is None:
        return []
    try:
        return [p.name for p in hint_points(model)]
    except ValueError:  # a user's model whose points were never attached: no CKA, the rest of the sweep stands
        return []


def _held_out(data, limit: int) -> tuple[np.ndarray, Any]:
    """The first ``limit`` test images and labels, as arrays (what sensitivity and the budget are
    measured on); a detector's labels are its images' ground-truth boxes."""
    if getattr(data, "detection", False):  # a detector's labelled images (DetectionFolder or a cross-distillation view)
        count = min(limit, len(data))
        return np.stack([data[i][0].numpy() for i in range(count)]), [data.truth(i) for i in range(count)]
    images, labels = [], []
    for x, y, _ in DataLoader(Subset(data, range(min(limit, len(data)))), batch_size=64):
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


class _Half(nn.Module):
    """FP16 inside, FP32 at the boundary (so every runtime feeds the same float32 input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def _fp16(art: ModelArtifact, path: Path, options: ExportOptions) -> Path:
    """An FP16 ONNX (what TensorRT 11 needs for FP16). Its parity is not checked here: ONNX
    Runtime's CPU provider lacks FP16 kernels for most ops; the GPU backends check it in profile."""
    half = _Half(copy.deepcopy(art.model)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "fp16.onnx"
        torch_to_onnx(half, torch.randn(1, 3, *art.input_size), raw, options.opset, options.dynamic_batch, dynamo=False)
        data = raw.read_bytes()
    atomic_write(path, lambda f: f.write(data))
    _sidecar(path, art, options, precision="fp16")
    return path
