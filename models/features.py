"""The feature contract every zoo classifier provides.

A *hint point* is one candidate sub-block (PURSUhInT 001 §3.1): a residual block of a ResNet or
WRN, a conv-BN-ReLU unit of a VGG, an inverted residual of a MobileNetV2, a unit of a
ShuffleNet. Points are listed in forward order with a 1-based index, as in the papers.

Pre- and post-activation features are the tensors just before and just after the sub-block's
last ReLU (001 §4.2). A point names the activation module ("tap") whose input is the
pre-activation and whose output is the post-activation; a point without a tap has no final
activation (e.g. MobileNetV2's linear bottleneck), so pre and post are both the block output.
Features are captured with forward hooks, so the models' own ``forward`` stays the plain
classifier forward that ONNX export and ordinary training use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HintPoint:
    """One candidate hint position.

    Attributes:
        index: 1-based position in forward order.
        name: module path of the sub-block (e.g. ``layer2.3``).
        stage: 1-based spatial stage the sub-block belongs to.
        tap: module path of its final activation, or None when it has none.
    """

    index: int
    name: str
    stage: int
    tap: str | None = None


@dataclass(frozen=True)
class PointSpec:
    """What a model declares per sub-block; indices are assigned by ``FeatureContract``."""

    name: str
    stage: int
    tap: str | None = None


class FeatureContract(ABC):
    """Mixin for ``nn.Module`` classifiers: hint points and features at chosen points.

    Subclasses implement ``point_specs()``; the rest is shared.
    """

    #: module path of the final fully connected layer (its weight's rows = classes)
    classifier_name: str = "fc"

    @abstractmethod
    def point_specs(self) -> list[PointSpec]:
        """The sub-blocks in forward order with their stage and final activation."""

    def hint_points(self) -> list[HintPoint]:
        """Candidate hint points in forward order (index 1..L)."""
        return [HintPoint(i, s.name, s.stage, s.tap) for i, s in enumerate(self.point_specs(), start=1)]

    def baseline_hints(self) -> list[int]:
        """Conventional hint points: the last sub-block of each stage (1-based)."""
        last: dict[int, int] = {}
        for p in self.hint_points():
            last[p.stage] = p.index
        return [last[s] for s in sorted(last)]

    def forward_features(
        self, x: torch.Tensor, indices: Sequence[int] | None = None, preact: bool = False
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """One forward pass returning the features at ``indices`` and the logits.

        Args:
            x: input batch (B, 3, H, W).
            indices: 1-based hint indices; None means every candidate.
            preact: take features before the sub-block's last ReLU instead of after it.

        Returns:
            ``({index: (B, C_i, H_i, W_i)}, logits (B, num_classes))``, the dict in the order asked.

        Raises:
            ValueError: an index outside 1..L.
        """
        captured: dict[int, torch.Tensor] = {}
        with self.feature_hooks(indices, captured.__setitem__, preact=preact) as chosen:
            logits = self(x)
        return {i: captured[i] for i in chosen}, logits

    @contextmanager
    def feature_hooks(
        self, indices: Sequence[int] | None, sink: Callable[[int, torch.Tensor], None], preact: bool = False
    ) -> Iterator[list[int]]:
        """While the context is open, every forward pass calls ``sink(index, feature)`` per chosen point.

        This is the one place that maps hint indices to modules; callers that only need a
        reduction of each feature (e.g. its spatial mean) do it in ``sink`` so that the full
        maps of all layers are never held at once.
        """
        points = self.hint_points()
        chosen = check_indices(indices, len(points))
        modules = dict(self.named_modules())
        handles = []
        for i in chosen:
            point = points[i - 1]
            take_input = preact and point.tap is not None
            module = modules[point.name if point.tap is None else point.tap]
            handles.append(module.register_forward_hook(_hook(sink, i, take_input)))
        try:
            yield chosen
        finally:
            for h in handles:
                h.remove()


def check_indices(indices: Sequence[int] | None, num_points: int) -> list[int]:
    """Validate 1-based hint indices against ``num_points`` candidates; None means all."""
    if indices is None:
        return list(range(1, num_points + 1))
    chosen = [int(i) for i in indices]
    bad = [i for i in chosen if not 1 <= i <= num_points]
    if bad:
        raise ValueError(f"hint indices {bad} are outside 1..{num_points} (the model's candidate count)")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"hint indices {chosen} contain duplicates")
    return chosen


def _hook(sink: Callable[[int, torch.Tensor], None], index: int, take_input: bool):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        sink(index, inputs[0] if take_input else output)

    return hook
