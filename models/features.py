"""The feature contract: hint points of a model and its features at chosen points.

Zoo models declare their points (``FeatureContract.point_specs``); any other ``nn.Module`` gets
them from ``attach_points`` (found from its graph by ``models.discover``, or named by globs).
The module-level functions below take either.

A *hint point* is one candidate sub-block (PURSUhInT, Keser et al., §3.1): a residual block of a ResNet or
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
from contextlib import AbstractContextManager, contextmanager
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
        output: which element of the sub-block's output is its feature map, for a block that returns
            a tuple, list or dict (RepDistiller's last block of a stage returns ``(out, preact)``);
            None when it returns one tensor.
        preact: the element that holds the pre-activation map, for a block that hands one out.
        tokens: for a transformer block, how many leading class/register tokens are dropped before
            its (B, N, D) tokens are read as a (B, D, s, s) map; None for blocks that make maps.
    """

    index: int
    name: str
    stage: int
    tap: str | None = None
    output: int | str | None = None
    preact: int | str | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class PointSpec:
    """What a model declares per sub-block; indices are assigned by ``FeatureContract``."""

    name: str
    stage: int
    tap: str | None = None
    output: int | str | None = None  # element of a tuple/list/dict output that is the map (see HintPoint)
    preact: int | str | None = None
    tokens: int | None = None


class FeatureContract(ABC):
    """Mixin for zoo classifiers: they declare their hint points (``point_specs``).

    The methods below are the module-level functions of the same name, which take any model:
    a zoo model answers from its declaration, any other from ``attach_points`` (discovery).
    """

    #: module path of the final fully connected layer (its weight's rows = classes)
    classifier_name: str = "fc"

    @abstractmethod
    def point_specs(self) -> list[PointSpec]:
        """The sub-blocks in forward order with their stage and final activation."""

    def hint_points(self) -> list[HintPoint]:
        return hint_points(self)

    def baseline_hints(self) -> list[int]:
        return baseline_hints(self)

    def forward_features(
        self, x: torch.Tensor, indices: Sequence[int] | None = None, preact: bool = False
    ) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        return forward_features(self, x, indices, preact)

    def feature_hooks(
        self, indices: Sequence[int] | None, sink: Callable[[int, torch.Tensor], None], preact: bool = False
    ) -> AbstractContextManager[list[int]]:
        return feature_hooks(self, indices, sink, preact)


#: instance attribute where ``attach_points`` stores the points of a model (found or named by globs)
POINTS_ATTR = "hint_point_specs"


def point_specs(model: nn.Module) -> list[PointSpec]:
    """The model's candidate sub-blocks: attached ones first (discovered or named by the user), else declared.

    Raises:
        ValueError: the model declares none and none were attached.
    """
    attached = getattr(model, POINTS_ATTR, None)
    if attached is not None:
        return list(attached)
    if isinstance(model, FeatureContract):
        return model.point_specs()
    raise ValueError(
        f"{type(model).__name__} has no hint points yet: call compressor.models.attach_points(model, input_size) "
        "(or build it with compressor.models.build_model)"
    )


def classifier_name(model: nn.Module) -> str | None:
    """Module path of the layer whose weight rows are the classes (None when discovery found none)."""
    return getattr(model, "classifier_name", None)


def hint_points(model: nn.Module) -> list[HintPoint]:
    """Candidate hint points in forward order (index 1..L)."""
    return [HintPoint(i, s.name, s.stage, s.tap, s.output, s.preact, s.tokens) for i, s in enumerate(point_specs(model), start=1)]


def baseline_hints(model: nn.Module) -> list[int]:
    """Conventional hint points: the last sub-block of each stage (1-based)."""
    last: dict[int, int] = {}
    for p in hint_points(model):
        last[p.stage] = p.index
    return [last[s] for s in sorted(last)]


def forward_features(
    model: nn.Module, x: torch.Tensor, indices: Sequence[int] | None = None, preact: bool = False
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward pass returning the features at ``indices`` and the logits.

    Args:
        model: a zoo model, or any model with attached points.
        x: input batch (B, 3, H, W).
        indices: 1-based hint indices; None means every candidate.
        preact: take features before the sub-block's last activation instead of after it.

    Returns:
        ``({index: (B, C_i, H_i, W_i)}, logits (B, num_classes))``, the dict in the order asked.

    Raises:
        ValueError: an index outside 1..L.
    """
    captured: dict[int, torch.Tensor] = {}
    with feature_hooks(model, indices, captured.__setitem__, preact=preact) as chosen:
        logits = model(x)
    return {i: captured[i] for i in chosen}, logits


@contextmanager
def feature_hooks(
    model: nn.Module, indices: Sequence[int] | None, sink: Callable[[int, torch.Tensor], None], preact: bool = False
) -> Iterator[list[int]]:
    """While the context is open, every forward pass calls ``sink(index, feature)`` per chosen point.

    This is the one place that maps hint indices to modules; callers that only need a
    reduction of each feature (e.g. its spatial mean) do it in ``sink`` so that the full
    maps of all layers are never held at once.
    """
    points = hint_points(model)
    chosen = check_indices(indices, len(points))
    modules = dict(model.named_modules())
    handles = []
    for i in chosen:
        point = points[i - 1]
        if preact and point.preact is not None:  # the block hands its pre-activation out itself
            hook = _hook(sink, i, False, point.preact)
            module = modules[point.name]
        else:
            take_input = preact and point.tap is not None
            module = modules[point.name if point.tap is None else point.tap]
            hook = _hook(sink, i, take_input, None if point.tap is not None else point.output, point.tokens)
        handles.append(module.register_forward_hook(hook))
    try:
        yield chosen
    finally:
        for h in handles:
            h.remove()


def match_student_points(teacher: nn.Module, student: nn.Module, teacher_points: list[int]) -> list[int]:
    """For each teacher hint, the student point at the same relative depth of the same stage
    (the student's last stage when it has fewer); a taken point moves to the nearest free one.
    Cross distillation pairs its hints so, and distillation does when the student's stage ends
    are not as many as the teacher's hints (a 3-stage CIFAR teacher, a 4-stage ImageNet student).

    Raises:
        ValueError: more teacher hints than student candidates.
    """
    t_points, s_points = hint_points(teacher), hint_points(student)
    if len(teacher_points) > len(s_points):
        raise ValueError(f"{len(teacher_points)} teacher hints but the student has only {len(s_points)} candidate points; lower hints.k")
    by_stage: dict[int, list[int]] = {}
    for p in s_points:
        by_stage.setdefault(p.stage, []).append(p.index)
    chosen: list[int] = []
    for h in teacher_points:
        stage = min(t_points[h - 1].stage, max(by_stage))
        t_stage = [p.index for p in t_points if p.stage == t_points[h - 1].stage]
        s_stage = by_stage.get(stage) or by_stage[max(by_stage)]
        pos = (t_stage.index(h) / (len(t_stage) - 1)) if len(t_stage) > 1 else 1.0
        want = s_stage[round(pos * (len(s_stage) - 1))]
        free = [p.index for p in s_points if p.index not in chosen]
        chosen.append(min(free, key=lambda i: (abs(i - want), -i)))
    return chosen


def require_points(model: nn.Module, who: str) -> list[HintPoint]:
    """The model's hint points, for a use that needs some.

    Raises:
        ValueError: it has none (with the reason discovery gave).
    """
    points = hint_points(model)
    if not points:
        reason = getattr(model, "hint_points_note", "none were declared or found")
        raise ValueError(f"{who} has no hint points ({reason}); logit methods (kd, dkd, ...) need none")
    return points


def without_preact(model: nn.Module, indices: Sequence[int]) -> list[int]:
    """Those of ``indices`` whose point has no pre-activation of its own (no final activation module
    that runs once, and no pre-activation handed out): there ``preact`` features are the block output."""
    points = hint_points(model)
    return [i for i in indices if points[i - 1].tap is None and points[i - 1].preact is None]


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


def tokens_to_map(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, N, D) transformer tokens -> (B, D, s, s): the ``prefix`` leading class/register tokens dropped,
    the N - prefix = s^2 patch tokens laid out in their row-major patch order."""
    patches = tokens[:, prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def _hook(sink: Callable[[int, torch.Tensor], None], index: int, take_input: bool, element: int | str | None = None,
          tokens: int | None = None):  # fmt: skip
    def hook(module: nn.Module, inputs: tuple, output) -> None:
        value = inputs[0] if take_input else output
        value = value if element is None else value[element]
        sink(index, value if tokens is None else tokens_to_map(value, tokens))

    return hook
