"""Command-line spelling of model references: ``--arch``, ``--arch-kwargs``, ``--points``."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

REF_HELP = "zoo name, or your own model as path/to/file.py:function or package.module:function (this runs your code)"
KWARGS_HELP = "keyword arguments of the architecture, e.g. num_classes=10,width=2 (values read as YAML scalars)"
POINTS_HELP = "module-name globs naming the candidate hint points, e.g. 'layer*.?' (default: declared or found in the graph)"


def parse_kwargs(text: str) -> dict[str, Any]:
    """``a=1,b=x,c=[1,2]`` -> ``{'a': 1, 'b': 'x', 'c': [1, 2]}``; commas inside brackets stay."""
    out: dict[str, Any] = {}
    for item in _split(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE (write e.g. num_classes=10,width=2)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise argparse.ArgumentTypeError(f"value of {key.strip()!r} is not valid YAML: {e}") from None
    return out


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]``; the command checks that they make a repetition (exit 2)."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


def finite_float(text: str) -> float:
    """A float flag's value: a number, never nan or inf (they pass every comparison check and poison the run)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def folder(text: str) -> str:
    """An output folder's name: never empty (an empty --out would mean the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the folder name is empty; name a folder, e.g. --out runs/mine")
    return text


def parse_globs(text: str) -> list[str]:
    globs = [g.strip() for g in text.split(",") if g.strip()]
    if not globs:
        raise argparse.ArgumentTypeError("give at least one module-name glob, e.g. 'layer*.?'")
    return globs


def _split(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{(" and 1 or 0
        depth -= ch in "]})" and 1 or 0
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    return [i for i in [*items, current] if i.strip()]
