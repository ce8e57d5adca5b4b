"""Model references: a zoo name, or a factory in the user's own code.

``resnet8`` builds a zoo model; ``path/to/file.py:function`` or ``package.module:function``
imports the user's module and calls ``function(**kwargs)`` (torchvision or timm models work
this way where those packages are installed: ``torchvision.models:resnet18``). A factory
reference runs the user's code, exactly as ``import`` would. The reference and its keyword
arguments are what sidecars record, so later stages rebuild the same model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .discover import attach_points
from .features import classifier_name
from .zoo import MODELS, create_model

DEFAULT_INPUT_SIZE = (32, 32)


class ModelReferenceError(ValueError):
    """A model reference that cannot be resolved; the message says why and what to change."""


def is_factory(ref: str) -> bool:
    """True for ``file.py:function`` / ``package.module:function``, False for zoo names."""
    return ref not in MODELS and ":" in ref


def short_name(ref: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """A file-name-safe label: ``resnet8``; ``/home/u/nets.py:small_cnn`` -> ``nets.small_cnn``;
    ``timm:create_model`` with ``model_name=resnet18`` -> ``timm.resnet18`` (a hub's model keeps its name)."""
    if ref in MODELS or ":" not in ref:
        return re.sub(r"[^\w.-]", "_", ref)
    target, _, name = ref.rpartition(":")
    if name == "create_model" and isinstance((kwargs or {}).get("model_name"), str):
        name = kwargs["model_name"]
    module = Path(target).stem if target.endswith(".py") or "/" in target else target.rsplit(".", 1)[-1]
    return re.sub(r"[^\w.-]", "_", f"{module}.{name}")


def family(ref: str | None) -> str:
    """The zoo family of a reference (``cifar``, ``imagenet``, ``detection``), ``custom`` for the user's models."""
    return MODELS.get(ref).family if ref in MODELS else "custom"


def check_reference(ref: str) -> None:
    """Raise ``ModelReferenceError`` unless ``ref`` is a zoo name or has the form of a factory reference."""
    if ref in MODELS:
        return
    target, _, name = ref.rpartition(":")
    if not target or not name:
        raise ModelReferenceError(
            f"{MODELS.unknown_message(ref)}; or name your own model as path/to/file.py:function or package.module:function"
        )


def load_factory(ref: str) -> Callable[..., Any]:
    """Import the callable a factory reference names.

    Raises:
        ModelReferenceError: the file or module is missing, raises on import, or lacks the name.
    """
    check_reference(ref)
    target, _, name = ref.rpartition(":")
    module = _import_file(target) if target.endswith(".py") or "/" in target else _import_module(target)
    obj: Any = module
    if not hasattr(module, name.split(".")[0]) and callable(getattr(module, "create_model", None)):
        # a model hub's shorthand: timm:resnet18 is timm.create_model("resnet18")
        return functools.partial(module.create_model, name)
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelReferenceError(f"{target} has no attribute {name!r}; check the name after ':' in {ref!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelReferenceError(f"{ref} is a {type(obj).__name__}, not a function or class that builds a model")
    return obj


def build_model(
    ref: str,
    num_classes: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | None = None,
    points: Sequence[str] | None = None,
    within: str | None = None,
) -> nn.Module:
    """Build the model a reference names, with its hint points.

    Args:
        ref: zoo name or factory reference.
        num_classes: passed to the zoo model, or to a factory that takes ``num_classes``.
        kwargs: keyword arguments of the zoo model or the factory.
        input_size: (H, W) used to find a factory model's hint points (default 32x32).
        points: module-name globs that name the candidate hint points instead of the rules.
        within: restrict found points to this submodule (a detector's ``backbone``).

    Returns:
        The model, with ``model.arch`` (the reference) and ``model.arch_kwargs`` set for sidecars.

    Raises:
        ModelReferenceError: unknown name, a factory that is missing, raises or returns no
            ``nn.Module``, a class count the factory cannot give, no hint points found.
    """
    kw = dict(kwargs or {})
    if ref in MODELS:
        model = _create_zoo(ref, num_classes, kw)
        if points:
            _attach(model, ref, input_size or MODELS.get(ref).input_size, points, within)
    else:
        model = _call_factory(ref, num_classes, kw)
        _attach(model, ref, input_size or DEFAULT_INPUT_SIZE, points, within)
        _check_classes(model, ref, num_classes)
    model.arch = canonical_reference(ref)
    model.arch_kwargs = kw
    return model


def canonical_reference(ref: str, base: str | Path | None = None) -> str:
    """A file reference with an absolute path (relative ones start at ``base``, default the working
    directory), so that a sidecar read from another folder still finds it; others as given."""
    target, _, name = ref.rpartition(":")
    if ref in MODELS or not (target.endswith(".py") or "/" in target):
        return ref
    path = Path(target).expanduser()
    return f"{(path if path.is_absolute() else Path(base or Path.cwd()) / path).resolve()}:{name}"


def _create_zoo(name: str, num_classes: int | None, kw: dict[str, Any]) -> nn.Module:
    """A zoo model; keyword arguments it does not take, or values it cannot build, -> a message naming what it takes."""
    try:
        return create_model(name, num_classes=num_classes, **kw)
    except Exception as e:
        if not kw:
            raise
        try:
            params = [p for p in inspect.signature(MODELS.get(name).build).parameters if p != "num_classes"]
        except (TypeError, ValueError):
            params = []
        takes = f"; it takes {', '.join(params)}" if params else ""
        raise ModelReferenceError(f"{name}({_args(kw)}) cannot be built ({type(e).__name__}: {e}){takes}") from None


FALLBACK_CLASSES = 100  # a factory that needs a class count where nothing gives one (inspect ARCH alone): CIFAR-100's


def _call_factory(ref: str, num_classes: int | None, kw: dict[str, Any]) -> nn.Module:
    """Call the user's factory. ``num_classes`` goes to one that takes it (by name, or through
    ``**kwargs``); one that needs it where no count is known (no data, checkpoint or sidecar) gets
    ``FALLBACK_CLASSES``, which only sizes its classifier."""
    factory = load_factory(ref)
    if num_classes is not None and "num_classes" not in kw and _accepts(factory, "num_classes"):
        kw["num_classes"] = int(num_classes)
    try:
        model = factory(**kw)
    except TypeError as e:
        if "num_classes" in kw or "num_classes" not in str(e) or not _accepts(factory, "num_classes"):
            raise ModelReferenceError(_call_failed(ref, factory, kw, e)) from None
        return _call_factory(ref, FALLBACK_CLASSES, kw)
    except Exception as e:
        raise ModelReferenceError(_call_failed(ref, factory, kw, e)) from None
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(f"{ref}({_args(kw)}) returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _call_failed(ref: str, factory: Callable[..., Any], kw: dict[str, Any], e: Exception) -> str:
    """The message for a factory that raised: what it raised, what it takes, and how to pass it."""
    try:
        takes = f"; it takes {inspect.signature(factory)}"
    except (TypeError, ValueError):
        takes = ""
    how = " (pass its arguments with --arch-kwargs / --student-kwargs K=V, or kwargs: in YAML)" if isinstance(e, TypeError) else ""
    return f"{ref}({_args(kw)}) raised {type(e).__name__}: {e}{takes}{how}"


def _attach(model: nn.Module, ref: str, input_size: Sequence[int], points: Sequence[str] | None, within: str | None) -> None:
    try:  # a model without candidates still serves logit methods; hint methods are told why it has none
        attach_points(model, input_size, patterns=points, within=within, required=False)
    except ValueError as e:
        raise ModelReferenceError(f"{ref}: {e}") from None


def _check_classes(model: nn.Module, ref: str, num_classes: int | None) -> None:
    name = classifier_name(model)
    if num_classes is None or name is None:
        return
    found = int(model.get_submodule(name).weight.shape[0])
    if found != num_classes:
        raise ModelReferenceError(
            f"{ref} builds a model with {found} classes but {num_classes} are needed; give the factory a "
            f"num_classes parameter, or pass num_classes={num_classes} in its keyword arguments"
        )


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _import_file(target: str):
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise ModelReferenceError(f"model file {target} does not exist (relative paths start at {Path.cwd()})")
    # A name of its own per file, so that two users' model.py files never replace each other.
    name = f"compressor_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise ModelReferenceError(f"model file {target} is not a Python file (.py); name the file that defines the model")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ModelReferenceError(f"importing {target} raised {type(e).__name__}: {e}") from None
    return module


def _import_module(target: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise ModelReferenceError(
            f"module {target!r} cannot be imported ({e}); install its package, or give a file path (path/to/file.py:function)"
        ) from None
    except Exception as e:
        raise ModelReferenceError(f"importing {target} raised {type(e).__name__}: {e}") from None


def _args(kw: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())
