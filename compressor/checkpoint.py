"""Loading the checkpoints users already have into zoo models.

Layouts understood: RepDistiller/CRD files ``{'model', 'epoch', 'accuracy' |
'best_acc', 'optimizer' | 'opt'}``, ``{'state_dict'}`` (Lightning, mmrazor), ``{'network'}``
(letKD), ``{'net'}``, raw state_dicts (AFD, EKD), prefixes from DataParallel/DDP (``module.``),
Lightning (``model.``), mmrazor (``architecture.``) and ``torch.compile`` (``_orig_mod.``), and
TorchScript archives. Everything is mapped to CPU and unpickled with ``weights_only=True``
unless the caller opts in for a trusted file.
"""

from __future__ import annotations

import copy
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressor.models import (
    MODELS,
    ModelReferenceError,
    attach_points,
    build_model,
    classifier_name,
    create_model,
    is_factory,
    list_models,
    program_module,
)

from .errors import UserError
from .io import file_digest, read_json

TRUST_FLAG = "--trust-checkpoint"
STUDENT_SCHEMA = "edge-compressor/student"
PROGRAM = "torch.export program"
_WRAPPER_KEYS = ("model", "state_dict", "network", "net", "student", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.", "architecture.", "model.")
_META_KEYS = ("epoch", "accuracy", "best_acc", "acc", "arch")


@dataclass
class LoadedCheckpoint:
    """A checkpoint loaded into its zoo model.

    Attributes:
        model: the zoo model in eval mode, on CPU.
        arch: zoo architecture name.
        num_classes: classifier outputs.
        layout: how the file was organised (``repdistiller``, ``state_dict``, ``raw``, ...).
        digest: ``sha256:<hex>`` of the file.
        meta: scalar entries found beside the weights (epoch, accuracy, ...).
        notes: things the loader decided that a user may want to know.
        input_size: the (H, W) the file records, if any.
    """

    model: nn.Module
    arch: str
    num_classes: int
    layout: str
    digest: str
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    input_size: tuple[int, int] | None = None  # the size the file records (a sidecar's, a program's example input)


def load_checkpoint(path: str | Path, arch: str | None = None, num_classes: int | None = None, trusted: bool = False,
                    options: dict[str, Any] | None = None, kwargs: dict[str, Any] | None = None,
                    points: list[str] | None = None, input_size: tuple[int, int] | None = None) -> LoadedCheckpoint:  # fmt: skip
    """Load a classifier checkpoint into its model (zoo or the user's factory), strictly.

    Args:
        path: checkpoint file.
        arch: zoo architecture or factory reference (``file.py:function``); inferred from
            RepDistiller folder naming or the keys when None (zoo models only).
        num_classes: expected classes; read from the classifier weight when None.
        trusted: allow full unpickling (arbitrary code) for legacy files that need it.
        options: model options from a student's sidecar (``model_options``, e.g. letKD layers).
        kwargs: keyword arguments of the architecture (a factory's, from ``--arch-kwargs``).
        points: module-name globs naming the hint points instead of the declared/found ones.
        input_size: (H, W) at which a factory model's hint points are found.

    Raises:
        UserError: missing/corrupt file, a pickle that needs ``trusted``, keys that fit no
            architecture, a class count other than the one asked for.
    """
    path = Path(path)
    state, layout, meta = read_state_dict(path, trusted=trusted)
    notes: list[str] = []
    digest = file_digest(path)
    side = _student_sidecar(path)
    check_sidecar(path, side, digest)
    if arch is None and side.get("schema") == STUDENT_SCHEMA and isinstance(side.get("arch"), str):
        # a student artifact says what it is: a factory model is rebuilt without being named again (when trusted)
        arch, kwargs, points = recorded_arch(path, side, trusted), kwargs or side.get("arch_kwargs"), points or side.get("points")
        options = options or side.get("model_options")
        input_size = input_size or tuple(side.get("input_size", ())) or None
    if arch is None and layout == PROGRAM and not matching_archs(state):
        model, size = _load_program(path, input_size, points)
        return LoadedCheckpoint(model, model.arch, model_classes(model), layout, digest, meta, notes, size)
    if arch is not None and is_factory(arch):
        model = _load_factory(path, arch, num_classes, state, kwargs, points, input_size)
        return LoadedCheckpoint(model, arch, model_classes(model), layout, digest, meta, notes, input_size)
    if arch is None:
        arch = _choose_arch(path, state, meta, notes)
    elif arch not in MODELS:
        raise UserError(MODELS.unknown_message(arch) + "; or name your own model as path/to/file.py:function")
    found_classes = classes_in_state_dict(arch, state)
    if num_classes is not None and found_classes is not None and found_classes != num_classes:
        raise UserError(
            f"checkpoint {path} was trained for {found_classes} classes but {num_classes} were asked for; "
            f"pass --num-classes {found_classes} (or leave it out to use the checkpoint's count)"
        )
    n = num_classes or found_classes
    try:
        model = build_model(arch, n, {**copy.deepcopy(options or {}), **(kwargs or {})}, input_size, points)
    except ModelReferenceError as e:
        raise UserError(str(e)) from None
    _load_strict(model, path, arch, n, state)
    return LoadedCheckpoint(model, arch, model_classes(model), layout, digest, meta, notes, input_size)


def _load_factory(path: Path, ref: str, num_classes: int | None, state: dict[str, torch.Tensor], kwargs: dict[str, Any] | None,
                  points: list[str] | None, input_size: tuple[int, int] | None) -> nn.Module:  # fmt: skip
    """Build the user's model and load ``state`` into it; the class count comes from the checkpoint's classifier."""
    try:
        model = build_model(ref, num_classes or _last_linear_rows(state), kwargs, input_size, points)
        found = _classes_of(model, state)
        if num_classes is None and found is not None and found != model_classes(model):
            model = build_model(ref, found, kwargs, input_size, points)
    except ModelReferenceError as e:
        raise UserError(str(e)) from None
    if num_classes is not None and found is not None and found != num_classes:
        raise UserError(f"checkpoint {path} was trained for {found} classes but {num_classes} were asked for")
    _load_strict(model, path, ref, model_classes(model), state)
    return model


def _classes_of(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    name = classifier_name(model)
    weight = state.get(f"{name}.weight") if name else None
    return int(weight.shape[0]) if weight is not None and weight.dim() in (2, 4) else None


def _last_linear_rows(state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the last 2-D weight in a state dict: the class count of a classifier ending in a linear
    layer, for a factory that needs ``num_classes`` to be built at all (checked against the built model)."""
    rows = [t.shape[0] for k, t in state.items() if k.endswith("weight") and isinstance(t, torch.Tensor) and t.dim() == 2]
    return int(rows[-1]) if rows else None


def _load_strict(model: nn.Module, path: Path, arch: str, num_classes: int | None, state: dict[str, torch.Tensor]) -> None:
    problems = compare_keys(model.state_dict(), state)
    if problems:
        raise UserError(_mismatch_message(path, arch, num_classes, problems, state))
    model.load_state_dict(_fill_batch_counters(_usable_tensors(path, state), model), strict=True)
    model.eval()


def _usable_tensors(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sparse tensors made dense; meta tensors (shapes without data) and NaN/inf weights refused, since
    every later stage (features, export parity, accuracy) would fail on them less clearly.

    Raises:
        UserError: a meta tensor, or a floating-point tensor holding NaN or inf (named, with how many).
    """
    empty = [k for k, t in state.items() if isinstance(t, torch.Tensor) and t.is_meta]
    if empty:
        raise UserError(f"checkpoint {path} holds meta tensors without data ({', '.join(empty[:3])}{', ...' if len(empty) > 3 else ''}): "
                        "it was saved from a model on the 'meta' device; save the state_dict of the materialised model")  # fmt: skip
    state = {k: t.to_dense() if isinstance(t, torch.Tensor) and t.layout != torch.strided else t for k, t in state.items()}
    counts = {k: int((~torch.isfinite(t)).sum()) for k, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    bad = {k: n for k, n in counts.items() if n}
    if bad:
        first = ", ".join(f"{k} ({n} values)" for k, n in list(bad.items())[:3])
        raise UserError(f"checkpoint {path} holds NaN or inf weights in {len(bad)} tensor(s): {first}; the training that saved it "
                        "diverged; use an earlier checkpoint")  # fmt: skip
    return state


def check_sidecar(path: Path, meta: dict[str, Any], digest: str | None = None) -> None:
    """A sidecar of ours must describe this very file with usable values (``digest``: the file's, if already computed).

    Raises:
        UserError: its digest names other bytes (the weights were replaced after it was written), or
            its input size / normalisation is malformed or missing.
    """
    if not str(meta.get("schema", "")).startswith("edge-compressor/"):  # a student or an exported model of ours
        return
    side = path.with_suffix(".json")
    recorded = meta.get("digest")
    if recorded and recorded != (digest or file_digest(path)):
        raise UserError(f"{side} describes other weights than {path.name} (digest differs): the file was replaced after its sidecar "
                        f"was written. Re-create both with the command that made them, or remove {side.name} and pass --arch")  # fmt: skip
    kinds = {"arch": (str,), "arch_kwargs": (dict,), "points": (list,), "num_classes": (int,), "model_options": (dict,)}
    for key, types in kinds.items():
        if meta.get(key) is not None and not isinstance(meta[key], types):
            raise UserError(f"{side}: {key} must be a {types[0].__name__}, got {meta[key]!r}; fix or re-create the sidecar")
    if isinstance(meta.get("num_classes"), int) and meta["num_classes"] < 1:
        raise UserError(f"{side}: num_classes must be >= 1, got {meta['num_classes']}; fix or re-create the sidecar")
    size = meta.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise UserError(f"{side}: input_size must be [H, W] with positive integers, got {size!r}; fix or re-create the sidecar")
    for key in ("mean", "std"):
        values = meta.get(key)
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, int | float) for v in values)):
            raise UserError(f"{side}: {key} must be three numbers (one per channel), got {values!r}; fix or re-create the sidecar")
    if any(v <= 0 for v in meta["std"]):
        raise UserError(f"{side}: std must be positive, got {meta['std']}")


def recorded_arch(path: Path, meta: dict[str, Any], trusted: bool) -> str | None:
    """The architecture a sidecar records, honoured as it is only when it is a zoo name or the file is
    trusted. A factory reference (``file.py:function``, ``package.module:function``) imports and calls
    code, so one read from a file is treated like a pickle: a downloaded ``model.pt`` + ``model.json``
    pair must not run whatever its JSON names. Checked before anything is imported.

    Raises:
        UserError: a factory reference in an untrusted sidecar, naming it and the two ways to accept it.
    """
    arch = meta.get("arch")
    if not isinstance(arch, str):
        return None
    if is_factory(arch) and not trusted:
        raise UserError(f"{path.with_suffix('.json')} names the model {arch!r}, code to import and run, and a sidecar is data: "
                        f"nothing was imported. If you made this file, name the model yourself (--arch {arch}; --compare-arch for "
                        f"profile's --compare model) or trust the file "
                        f"({TRUST_FLAG}; trusted=True in Python)")  # fmt: skip
    return arch


def _student_sidecar(path: Path) -> dict[str, Any]:
    """The student sidecar beside a checkpoint; an unrelated or unreadable JSON file there is not ours to judge."""
    try:
        return sidecar_of(path) or {}
    except UserError:
        return {}


def sidecar_of(path: Path) -> dict[str, Any] | None:
    """``student.pt`` -> ``student.json`` (also ``x.onnx`` -> ``x.json``), if present and ours."""
    side = path.with_suffix(".json")
    if not side.exists() and not side.is_symlink():
        return None
    meta = read_json(side, "sidecar")
    return meta if isinstance(meta, dict) else None


def in_memory(model: nn.Module) -> LoadedCheckpoint:
    """A model object handed to the Python API, in the shape of a loaded checkpoint.

    Its architecture is ``model.arch`` when a factory built it, else ``module:Class`` of its class
    (a reference that rebuilds it where the class takes no required arguments)."""
    return LoadedCheckpoint(model.eval(), object_reference(model), model_classes(model), "in memory", "")


def object_reference(model: nn.Module) -> str:
    """``model.arch`` when a reference built it, else ``module:Class`` of its class."""
    return getattr(model, "arch", None) or f"{type(model).__module__}:{type(model).__qualname__}"


def read_state_dict(path: str | Path, trusted: bool = False) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Read a file and return ``(state_dict, layout, meta)`` with wrappers and prefixes removed."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file")
    if _is_torchscript(path):
        _refuse_program(path, trusted, "a TorchScript archive: torch.jit.load runs the program stored in it (its code and "
                                           "__setstate__ methods)")  # fmt: skip
        return _read_torchscript(path), "torchscript", {}
    if _is_exported_program(path):
        _refuse_program(path, trusted, "a torch.export archive: torch.export.load unpickles it with weights_only=False when the "
                                           "safe load fails, which runs code from the file")  # fmt: skip
        return _read_exported_program(path), PROGRAM, {}
    obj = _torch_load(path, trusted)
    state, layout, meta = _unwrap(obj, path)
    state, stripped = strip_prefixes(state)
    if stripped:
        layout += f" (prefix {'+'.join(stripped)} removed)"
    return state, layout, meta


def _torch_load(path: Path, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        # Only a refused global means "valid pickle, but it needs code"; anything else is damage.
        needed = re.findall(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
        if needed and "is blocked" in str(e):  # a call into os / subprocess / builtins: code, not weights
            raise UserError(
                f"checkpoint {path} calls {', '.join(sorted(set(needed)))} when unpickled: it holds code, not only weights, and "
                f"was not loaded. Do not use it unless you know exactly who made it; only {TRUST_FLAG} on a file you trust "
                f"would load it (and run that code)"
            ) from None
        if needed:
            what = f" ({', '.join(sorted(set(needed)))})"
            raise UserError(
                f"checkpoint {path} holds Python objects{what} beside its tensors, so it cannot be loaded safely "
                f"(weights_only=True). RepDistiller's *_last.pth files are like this: they pickle the argparse "
                f"Namespace of the run. Unpickling runs code from the file; if you trust where it came from, pass "
                f"{TRUST_FLAG} (trusted=True in Python), or re-save just its state_dict"
            ) from None
        raise _corrupt(path, e) from None
    except ModuleNotFoundError as e:  # a trusted pickle of a whole model whose class lives in code not importable here
        if not trusted:
            raise _corrupt(path, e) from None
        raise UserError(f"checkpoint {path} pickles a whole model whose code is in module {e.name!r}, which cannot be imported here; "
                        f"run from the folder that holds it (or install it), or save the model's state_dict and name its class "
                        f"with --arch path/to/file.py:factory") from None  # fmt: skip
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError, ImportError, KeyError, IndexError,
            TypeError, struct.error, UnicodeDecodeError) as e:  # fmt: skip
        # the unpickler meets bytes that are no pickle: a text file (a first byte of 'h' or 'j' reads as a memo lookup), garbage
        raise _corrupt(path, e) from None


def _refuse_program(path: Path, trusted: bool, what: str) -> None:
    """Programs are code, as pickles are: loaded only from a file the caller trusts."""
    if not trusted:
        raise UserError(f"checkpoint {path} is {what}, so it was not loaded. If you trust where it came from, pass {TRUST_FLAG} "
                        "(trusted=True in Python); or save just its weights (torch.save(model.state_dict(), PATH))")  # fmt: skip


def _corrupt(path: Path, err: Exception) -> UserError:
    size = path.stat().st_size
    return UserError(
        f"checkpoint {path} ({size} bytes) could not be read: it is truncated, corrupt or not a PyTorch file "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}). "
        f"Copy it again or point at the right file"
    )


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError) as e:
        raise _corrupt(path, e) from None
    return {k: v for k, v in module.state_dict().items()}


def _is_exported_program(path: Path) -> bool:
    """A ``torch.export.save`` archive (``.pt2``): a zip with an ``archive_format`` record."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/archive_format") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_exported_program(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a ``.pt2`` program, under the original module's state_dict keys (they load
    into a zoo model or the factory ``--arch`` names; ``_load_program`` runs the program itself)."""
    return {k: v.detach() for k, v in _program(path).state_dict.items() if torch.is_tensor(v)}


def _program(path: Path) -> torch.export.ExportedProgram:
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices from its pytree code, not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            return torch.export.load(str(path))
    except Exception as e:  # torch.export.load raises RuntimeError, KeyError, ... on damaged or foreign archives
        raise _corrupt(path, e) from None


def _load_program(path: Path, input_size: tuple[int, int] | None, points: list[str] | None) -> tuple[nn.Module, tuple[int, int]]:
    """A self-contained ``torch.export`` program as a frozen model (a teacher): its module tree
    restored, its hint points found. It runs only at shapes the program allows."""
    program = _program(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model, kinds = program_module(program)
    example = next((t for t in program.example_inputs[0] if torch.is_tensor(t) and t.dim() == 4), None)
    size = tuple(input_size or (tuple(example.shape[-2:]) if example is not None else ()))
    if len(size) != 2:
        raise UserError(f"{path}: the program records no (N, 3, H, W) example input; give the input size (--input-size H W)")
    try:
        attach_points(model, size, patterns=points, kinds=kinds)
        model(torch.zeros(2, 3, *size))
    except Exception as e:  # torch.export's guards raise RuntimeError / AssertionError on a shape it was not exported for
        raise UserError(
            f"{path}: the exported program cannot serve as a model here ({type(e).__name__}: {str(e).splitlines()[0]}). Export it "
            "with a dynamic batch (dynamic_shapes={'x': {0: torch.export.Dim('batch')}}) at the data's image size, or pass "
            "--arch path/to/file.py:function (the function that builds it) to load its weights into the module"
        ) from None
    model.arch = f"{path.name} (torch.export program)"
    return model.eval(), size


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    if isinstance(obj, nn.Module):  # a whole pickled model (only reachable with trusted=True)
        return dict(obj.state_dict()), "pickled module", {}
    if _is_state_dict(obj):
        return dict(obj), "raw state_dict", {}
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if _is_state_dict(inner):
                meta = _scalar_meta(obj)
                repdistiller = key == "model" and ({"epoch", "accuracy", "best_acc", "opt"} & set(obj))
                return dict(inner), "repdistiller" if repdistiller else f"{{'{key}': ...}}", meta
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise UserError(
            f"checkpoint {path} is a dict with keys {keys} but none of them holds a state_dict "
            f"(looked for {', '.join(_WRAPPER_KEYS)}); save the model's state_dict, or one of those wrappers"
        )
    raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, not a state_dict or a dict wrapping one")


def _scalar_meta(obj: Mapping) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key in _META_KEYS:
        value = obj.get(key)
        if torch.is_tensor(value) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float, str)):
            meta[key] = value
    opt = obj.get("opt")
    if opt is not None and isinstance(getattr(opt, "model", None), str):
        meta["arch"] = opt.model  # RepDistiller records the architecture in its argparse options
    return meta


def strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove wrapper prefixes shared by every key (``module.``, ``model.``, ...), repeatedly."""
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, stripped


def classes_in_state_dict(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count the checkpoint's classifier was trained for, if its weight is present."""
    weight = state.get(f"{_classifier_name(arch)}.weight")
    if weight is None or weight.dim() not in (2, 4):
        return None
    return MODELS.get(arch).classes_from_weight(weight)


def model_classes(model: nn.Module) -> int:
    if isinstance(getattr(model, "num_classes", None), int):
        return int(model.num_classes)
    name = classifier_name(model)
    if name is not None:
        return int(model.get_submodule(name).weight.shape[0])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]  # before its points are found: the last one defined
    if not linears:
        raise UserError(f"{type(model).__name__} has no linear classifier to read its class count from; pass --num-classes")
    return int(linears[-1].out_features)


@cache
def _classifier_name(arch: str) -> str:
    with torch.device("meta"):
        return create_model(arch, num_classes=1).classifier_name


@lru_cache(maxsize=256)
def _meta_shapes(arch: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a zoo model's state_dict, built on the meta device (no memory, fast)."""
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fill_batch_counters(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoints from PyTorch < 0.4.1 lack BN ``num_batches_tracked``; they carry no information."""
    expected = model.state_dict()
    missing = [k for k in expected if k.endswith("num_batches_tracked") and k not in state]
    if not missing:
        return state
    state = dict(state)
    for k in missing:
        state[k] = torch.zeros((), dtype=torch.long)
    return state


@dataclass
class KeyProblems:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, checkpoint shape, model shape

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def compare_keys(expected: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> KeyProblems:
    """Strict comparison of a model's state_dict (or key -> shape map) with a checkpoint's."""
    shape = lambda v: tuple(v.shape) if hasattr(v, "shape") else tuple(v)  # noqa: E731
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, shape(state[k]), shape(expected[k])) for k in expected if k in state and shape(state[k]) != shape(expected[k])]
    return KeyProblems(missing, unexpected, mismatched)


def matching_archs(state: Mapping[str, torch.Tensor]) -> list[tuple[str, int]]:
    """Zoo architectures (with class count) whose state_dict fits ``state`` key for key and shape for shape."""
    found = []
    for arch in list_models():
        n = classes_in_state_dict(arch, state)
        if n is None:
            continue
        if not compare_keys(_meta_shapes(arch, n), state):
            found.append((arch, n))
    return found


def arch_from_repdistiller_path(path: str | Path) -> str | None:
    """RepDistiller folder naming: ``resnet32x4_vanilla`` -> resnet32x4, ``wrn_40_2_vanilla`` -> wrn_40_2,
    student folders ``S:resnet8x4_T:resnet32x4_...`` -> resnet8x4. None when the folder says nothing."""
    folder = Path(path).resolve().parent.name
    tokens = folder.split("_")
    if not tokens or not tokens[0]:
        return None
    if tokens[0].startswith("S:"):
        tokens[0] = tokens[0][2:]
    name = "_".join(tokens[:3]) if tokens[0].startswith("wrn") else tokens[0]
    return name if name in MODELS else None


def _choose_arch(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any], notes: list[str]) -> str:
    candidates = [a for a in (arch_from_repdistiller_path(path), meta.get("arch")) if isinstance(a, str) and a in MODELS]
    for arch in candidates:
        n = classes_in_state_dict(arch, state)
        if n is not None and not compare_keys(_meta_shapes(arch, n), state):
            return arch
    matches = matching_archs(state)
    if len(matches) == 1:
        if candidates:
            notes.append(f"the folder/metadata suggests {candidates[0]!r} but the keys are those of {matches[0][0]!r}; using the keys")
        return matches[0][0]
    if len(matches) > 1:
        names = ", ".join(sorted({a for a, _ in matches}))
        raise UserError(f"checkpoint {path} fits several zoo architectures ({names}); pass --arch to choose one")
    raise UserError(
        f"could not tell the architecture of checkpoint {path}: its folder name does not follow RepDistiller's "
        f"'<arch>_vanilla' naming and its {len(state)} keys fit no zoo model exactly. Pass --arch: a zoo model "
        f"({', '.join(list_models())}), or your own as --arch path/to/file.py:function (a function that builds the model; "
        f"TorchScript and torch.export archives hold no module tree that hint points can attach to)"
    )


def _mismatch_message(path: Path, arch: str, num_classes: int | None, p: KeyProblems, state: Mapping) -> str:
    def listing(items: list[str], limit: int = 6) -> str:
        more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    parts = [f"checkpoint {path} does not fit architecture {arch!r} ({num_classes} classes)"]
    if p.missing:
        parts.append(f"missing {len(p.missing)} keys: {listing(p.missing)}")
    if p.unexpected:
        parts.append(f"unexpected {len(p.unexpected)} keys: {listing(p.unexpected)}")
    if p.mismatched:
        parts.append(
            f"{len(p.mismatched)} shape mismatches: "
            + listing([f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in p.mismatched])
        )
    matches = matching_archs(state)
    if matches:
        names = ", ".join(f"{a} ({n} classes)" for a, n in matches)
        parts.append(f"the keys do match zoo architecture {names}: pass --arch {matches[0][0]}")
    else:
        parts.append("no zoo architecture matches these keys exactly; check that this is the model you meant")
    return "; ".join(parts)
