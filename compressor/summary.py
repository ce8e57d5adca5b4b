"""What ``compressor inspect`` reports about a model: size, compute and candidate hint points."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compressor.models import MODELS, build_model
from compressor.models.features import baseline_hints, classifier_name, forward_features, hint_points
from compressor.models.resolve import DEFAULT_INPUT_SIZE
from compressor.models.stats import count_macs, count_params

from .checkpoint import model_classes


def describe_model(arch: str | nn.Module, num_classes: int | None = None, input_size: tuple[int, int] | None = None,
                   kwargs: dict[str, Any] | None = None, points: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Parameters, MACs and candidate hint points of a zoo architecture, a factory reference or a model.

    A zoo model is built on the meta device (shapes only), so even ImageNet models at 224x224
    take well under a second and no weights are needed; the user's models are built on the CPU.

    Returns:
        ``{'arch', 'num_classes', 'params', 'macs', 'input_size', 'candidates', 'baseline_hints'}``;
        each candidate is ``{'index', 'name', 'stage', 'shape'}`` with the (C, H, W) of its output.
    """
    zoo = isinstance(arch, str) and arch in MODELS
    size = tuple(input_size or (MODELS.get(arch).input_size if zoo else DEFAULT_INPUT_SIZE))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input size must be two positive integers (H W), got {size}")
    with torch.device("meta" if zoo and not points else "cpu"):
        model = arch if isinstance(arch, nn.Module) else build_model(arch, num_classes, kwargs, size, points)
        model.eval()
        with torch.no_grad():
            feats, _ = forward_features(model, torch.zeros(1, 3, *size))
    points = hint_points(model)
    head = classifier_name(model)
    return {
        "arch": getattr(model, "arch", type(model).__name__),
        "num_classes": model_classes(model) if head or hasattr(model, "num_classes") else None,
        "params": count_params(model),
        "macs": count_macs(model, size),
        "input_size": list(size),
        "candidates": [{"index": p.index, "name": p.name, "stage": p.stage, "shape": list(feats[p.index].shape[1:])} for p in points],
        "baseline_hints": baseline_hints(model),
        **({"no_points": model.hint_points_note} if not points and hasattr(model, "hint_points_note") else {}),
    }


def human_count(n: float) -> str:
    """1736564 -> '1.74 M', 278324 -> '278.32 K' (the papers' style)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def format_summary(info: dict[str, Any]) -> str:
    """A plain-text report of ``describe_model``'s result."""
    base = set(info["baseline_hints"])
    if "no_points" in info:
        info = {**info, "baseline_hints": f"[] ({info['no_points']}; logit methods need none)"}
    lines = [
        f"arch          {info['arch']}",
        f"classes       {info['num_classes']}",
        f"input         3x{info['input_size'][0]}x{info['input_size'][1]}",
        f"parameters    {human_count(info['params'])} ({info['params']:,})",
        f"MACs          {human_count(info['macs'])} ({info['macs']:,})",
        f"candidates    {len(info['candidates'])} hint points; baseline (stage ends) = {info['baseline_hints']}",
        "",
        f"{'idx':>4}  {'stage':>5}  {'name':<22} {'output (C, H, W)':<18}",
    ]
    for c in info["candidates"]:
        mark = "  <- baseline" if c["index"] in base else ""
        lines.append(f"{c['index']:>4}  {c['stage']:>5}  {c['name']:<22} {str(tuple(c['shape'])):<18}{mark}")
    return "\n".join(lines)
