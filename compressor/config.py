"""Typed configuration: a pydantic schema, YAML files, command-line overrides, clear errors.

Every command that takes a config reads it the same way: the YAML file (if any), then the
command's own flags, then ``--set key.sub=value`` overrides (values parsed as YAML). Unknown
keys are errors; each bad value is reported with its key, its value and what is allowed.
Relative paths in a YAML file are resolved against the file's folder.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from compressor.models import canonical_reference

from .errors import UserError
from .io import atomic_write_text, read_text

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for config sections: unknown keys are refused, values are checked on assignment, and no
    float is nan or inf (they pass every range check: ``lr: .inf`` would train straight to NaN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    text = read_text(path, "config file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {e}") from None
    except RecursionError:
        raise UserError(f"config file {path} nests deeper than any config does; give the right file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings at the top level, not a {type(data).__name__}")
    return data


def read_saved_config(path: str | Path) -> dict[str, Any]:
    """The resolved config a run saved (``save_config``), for comparing a resume's settings; ``{}``
    when it is missing or unreadable."""
    try:
        saved = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return saved if isinstance(saved, dict) else {}


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "optim.lr", 0.1)`` -> ``d["optim"]["lr"] = 0.1``, creating sections."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"cannot set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """``["optim.lr=0.1", "loss.method=at+kd"]`` -> ``[("optim.lr", 0.1), ...]`` (values as YAML)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} must look like key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def resolve_paths(tree: dict[str, Any], keys: Iterable[str], base: Path) -> None:
    """Make the dotted ``keys`` that hold relative paths absolute against ``base``."""

    def absolute(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (base / p).resolve())

    _rewrite(tree, keys, absolute)


def resolve_references(tree: dict[str, Any], keys: Iterable[str], base: Path) -> None:
    """Make the file part of the model references at ``keys`` (``nets/small.py:build``) absolute against ``base``."""
    _rewrite(tree, keys, lambda ref: canonical_reference(ref, base))


def _rewrite(tree: dict[str, Any], keys: Iterable[str], fn: Callable[[str], str]) -> None:
    """Replace each non-empty string at the dotted ``keys`` by ``fn(value)``."""
    for key in keys:
        node: Any = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str) and node[parts[-1]]:
            node[parts[-1]] = fn(node[parts[-1]])


def validate(model: type[M], tree: dict[str, Any], source: str = "config") -> M:
    """Build ``model`` from ``tree``; a ValidationError becomes one UserError listing every problem."""
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            value = err.get("input")
            shown = "" if err["type"] == "missing" or isinstance(value, dict) else f" (got {_short(value)})"
            lines.append(f"  {key}: {err['msg']}{shown}")
        raise UserError(f"invalid {source}:\n" + "\n".join(lines)) from None


def _short(value: Any, limit: int = 120) -> str:
    """A value as a message shows it: at most ``limit`` characters (a YAML alias bomb expands to megabytes)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = limit, limit, 8, 8, 3
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(model: type[M], path: str | Path | None, flags: dict[str, Any] | None, overrides: Iterable[str],
                path_keys: Iterable[str], what: str, ref_keys: Iterable[str] = ()) -> M:  # fmt: skip
    """YAML file (optional) <- flags (dotted keys, None = not given) <- ``--set`` overrides; relative
    paths (and model files in ``ref_keys``) in the file resolve against its folder, those from flags
    against the working directory."""
    tree: dict[str, Any] = {}
    if path is not None:
        tree = read_yaml(path)
        resolve_paths(tree, path_keys, Path(path).resolve().parent)
        resolve_references(tree, ref_keys, Path(path).resolve().parent)
    for key, value in (flags or {}).items():
        if value is not None:
            set_dotted(tree, key, value)
    for key, value in parse_overrides(overrides):
        set_dotted(tree, key, value)
    resolve_paths(tree, path_keys, Path.cwd())
    resolve_references(tree, ref_keys, Path.cwd())
    return validate(model, tree, f"{what}{f' {path}' if path else ''}")


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def save_config(model: BaseModel, path: str | Path) -> Path:
    return atomic_write_text(path, "# resolved configuration, written by edge-compressor\n" + dump_yaml(model))
