"""What export and profiling take as a model: a student artifact, a checkpoint, or an exported file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from compressor.models import MODELS, family, short_name
from compressor.models.resolve import DEFAULT_INPUT_SIZE
from torch import nn

from compressor.checkpoint import STUDENT_SCHEMA, check_sidecar, load_checkpoint, recorded_arch, sidecar_of
from compressor.data.base import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from compressor.device import available_memory, check_input_fits
from compressor.errors import UserError

EXPORT_SCHEMA = "edge-compressor/exported-model"
NO_MEAN, NO_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # no normalisation


@dataclass
class ModelArtifact:
    """A classifier with what preprocessing needs; ``model`` is None for .onnx/.plan files."""

    path: Path
    arch: str | None
    num_classes: int
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = field(default_factory=list)
    model: nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return short_name(self.arch, self.meta.get("arch_kwargs")) if self.arch else self.path.stem


def load_artifact(path: str | Path, arch: str | None = None, trusted: bool = False, kwargs: dict[str, Any] | None = None,
                  input_size: tuple[int, int] | None = None, mean: tuple[float, ...] | None = None,
                  std: tuple[float, ...] | None = None) -> ModelArtifact:  # fmt: skip
    """Load a student artifact (``student.pt`` + ``student.json``), any supported checkpoint
    (zoo architecture or factory reference, given or recorded in the sidecar), or any ``.onnx``
    file (ours with its sidecar, or a foreign one read from its graph).

    ``input_size``, ``mean`` and ``std`` override the sidecar's (and are needed where a foreign
    file leaves them open)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model {path} does not exist")
    meta = sidecar_of(path) or {}
    if meta.get("qat"):
        model = path.parent / meta["qat"]["int8_onnx"]
        raise UserError(f"{path} is the training state of quantization-aware distillation; its deployable model is {model} "
                        f"(already INT8 for {meta['qat']['target']}): profile that file")  # fmt: skip
    if path.suffix == ".onnx":
        check_sidecar(path, meta)
        return onnx_artifact(path, meta, input_size, mean, std)
    loaded = load_checkpoint(path, arch=arch or recorded_arch(path, meta, trusted), num_classes=meta.get("num_classes"), trusted=trusted,
                             options=meta.get("model_options"), kwargs=kwargs or meta.get("arch_kwargs"),
                             points=meta.get("points"), input_size=input_size or meta.get("input_size"))  # fmt: skip
    size, default_mean, default_std = _defaults(loaded.arch)
    check_input_fits(1, input_size or meta.get("input_size", size), str(path), "give a smaller --input-size or fix the sidecar")
    return ModelArtifact(
        path,
        loaded.arch,
        loaded.num_classes,
        tuple(input_size or meta.get("input_size", size)),
        tuple(mean or meta.get("mean", default_mean)),
        tuple(std or meta.get("std", default_std)),
        list(meta.get("class_names", [])),
        loaded.model.eval(),
        {**meta, "digest": loaded.digest} if meta.get("schema") == STUDENT_SCHEMA else {"digest": loaded.digest},
    )


def _defaults(arch: str) -> tuple[tuple[int, int], tuple[float, ...], tuple[float, ...]]:
    """Input size and normalisation a model gets when nothing says otherwise."""
    if arch not in MODELS:  # the user's own model: nothing to assume
        return DEFAULT_INPUT_SIZE, NO_MEAN, NO_STD
    entry = MODELS.get(arch)
    cifar = entry.family == "cifar"
    return entry.input_size, CIFAR100_MEAN if cifar else IMAGENET_MEAN, CIFAR100_STD if cifar else IMAGENET_STD


def onnx_artifact(path: Path, meta: dict[str, Any], input_size: tuple[int, int] | None = None,
                  mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> ModelArtifact:  # fmt: skip
    """An ``.onnx`` file as a model: input shape from the graph, normalisation from the sidecar or the caller.

    Raises:
        UserError: not a readable ONNX file, an input that is not one (N, C, H, W) image batch, or a
            dynamic spatial size without ``input_size``.
    """
    graph = read_onnx_io(path)
    dims = graph["input_shape"]
    static_hw = tuple(d for d in dims[2:] if isinstance(d, int))
    size = input_size or meta.get("input_size") or (static_hw if len(static_hw) == 2 else None)
    if size is None:
        raise UserError(f"{path}: input {graph['input_name']!r} has a dynamic spatial size {dims}; pass --input-size H W")
    if len(static_hw) == 2 and tuple(size) != static_hw:
        raise UserError(f"{path}: the graph fixes the input at {static_hw[0]}x{static_hw[1]} but {tuple(size)} was asked for")
    check_input_fits(1, size, str(path), "give a smaller --input-size")
    info = {**meta, "input": graph}
    if not meta:
        info["normalisation"] = "from --mean/--std" if mean else "none (no sidecar and no --mean/--std: inputs are [0, 1] images)"
    num_classes = meta.get("num_classes") or graph["output_classes"]
    if isinstance(dims[0], int):
        info["static_batch"] = dims[0]
    return ModelArtifact(path, meta.get("arch"), int(num_classes or 0), tuple(size), tuple(mean or meta.get("mean", NO_MEAN)),
                         tuple(std or meta.get("std", NO_STD)), meta.get("class_names", []), None, info)  # fmt: skip


def check_external_data(path: Path, model: onnx.ModelProto) -> None:
    """Every tensor ``model`` (read from ``path`` without its external data) keeps outside itself must
    be a file inside the model's folder (no absolute location, no '..', no link out), checked before
    a loader follows the location.

    Raises:
        UserError: a location outside the folder, or one that does not exist.
    """
    folder = path.resolve().parent
    tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise UserError(f"{path}: tensor {t.name!r} keeps its data at {location!r}, outside the model's folder {folder}; "
                            "external data must sit beside the model (re-save it with onnx.save(..., location='NAME.data'))")  # fmt: skip
        if not target.is_file():
            raise UserError(f"{path}: tensor {t.name!r} keeps its data in {target}, which does not exist; copy it beside the model")


def load_onnx(path: Path) -> onnx.ModelProto:
    """The one way a user's ONNX file is opened (without its external data, which is confined to the
    model's folder first): a regular file, parsed, of an IR and opset this ``onnx`` knows, passing
    ``onnx.checker``'s full check (acyclic, topologically sorted, known operators, shape inference), and
    with no tensor that shape inference (with data propagation) sizes beyond this machine's memory.

    Raises:
        UserError: any of those fails; the message names the file and what is wrong.
    """
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not a regular file (a folder, FIFO or device); give the .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, OSError ... for damaged files
        raise UserError(
            f"{path} is not a readable ONNX file ({type(e).__name__}: {e}); export it again or point at the right file"
        ) from None
    check_external_data(path, model)
    if not model.graph.node:
        raise UserError(f"{path} is not a readable ONNX file (no graph: empty or not a model); export it again or point at the right file")
    newest = onnx.defs.onnx_opset_version()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if model.ir_version > onnx.IR_VERSION or opset is not None and opset > newest:
        raise UserError(f"{path} was made for ONNX IR version {model.ir_version}, opset {opset}; the installed onnx {onnx.__version__} "
                        f"reads IR up to {onnx.IR_VERSION} and opsets up to {newest}: export with an older opset")  # fmt: skip
    try:
        onnx.checker.check_model(str(path), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # ValidationError, InferenceError, RecursionError for hostile graphs
        detail = " ".join(str(e).split())[:400]
        raise UserError(f"{path} is not a valid ONNX model ({type(e).__name__}: {detail}); export it again") from None
    _check_tensor_sizes(path, inferred)
    return model


def _check_tensor_sizes(path: Path, model: onnx.ModelProto) -> None:
    """A tensor whose inferred static shape cannot fit in free memory (a ConstantOfShape of 10^10
    elements, a huge declared initializer) is refused before ONNX Runtime tries to allocate it."""
    free = available_memory()
    if free is None:
        return
    infos = [*model.graph.value_info, *model.graph.output]
    sized = [(v.name, [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type)
             for v in infos if v.type.HasField("tensor_type")]  # fmt: skip
    sized += [(t.name, list(t.dims), t.data_type) for t in model.graph.initializer]
    for name, dims, elem in sized:
        try:
            nbytes = int(np.prod(dims, dtype=np.float64)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).itemsize
        except (KeyError, TypeError, ValueError):
            continue
        if nbytes > free:
            raise UserError(f"{path}: tensor {name!r} of shape {dims} would take {nbytes / (1 << 30):.3g} GiB, more than the "
                            f"{free / (1 << 30):.3g} GiB free here; this graph cannot run on this machine")  # fmt: skip


def read_onnx_io(path: Path) -> dict[str, Any]:
    """Name, shape (ints, or names for dynamic axes) and element type of the first image input, from
    a file that ``load_onnx`` has checked."""
    model = load_onnx(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UserError(f"{path} has {len(inputs)} graph inputs ({names}); profiling takes models with one image input")
    shape = [_dim(d) for d in inputs[0].type.tensor_type.shape.dim]
    if len(shape) != 4 or shape[1] not in (3, "?") and isinstance(shape[1], int) or 0 in shape:
        raise UserError(f"{path}: input {inputs[0].name!r} has shape {shape}; profiling takes (N, 3, H, W) image batches (N, H, W >= 1)")
    if inputs[0].type.tensor_type.elem_type not in _FLOAT_TYPES:
        kind = onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type)
        raise UserError(f"{path}: input {inputs[0].name!r} is a {kind} tensor; profiling feeds float images (float32, float16, float64)")
    outputs = [[_dim(d) for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    classes = outputs[0][-1] if outputs and len(outputs[0]) == 2 and isinstance(outputs[0][-1], int) else None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type).name
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in _FLOAT_TYPES)
    return {"input_name": inputs[0].name, "params": params, "input_shape": shape, "input_dtype": dtype, "output_classes": classes,
            "outputs": [o.name for o in model.graph.output]}  # fmt: skip


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _dim(d) -> int | str:
    return d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")


def is_qdq(path: str | Path) -> bool:
    """Whether an ONNX file is already quantized (holds QuantizeLinear nodes)."""
    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path), load_external_data=False).graph.node)


def is_detector(art: ModelArtifact) -> bool:
    """A zoo detector (YOLOv3): exported with its box decoding, scored by AP rather than top-1."""
    return family(art.arch) == "detection"
