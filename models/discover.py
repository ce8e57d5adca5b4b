"""Hint points of any ``nn.Module`` classifier, found from one traced forward pass.

The zoo declares its candidates (``point_specs``); any other model gets them here, by the rules
the zoo's declarations follow (PURSUhInT, Keser et al., §3.1: a candidate is a sub-block):

- a *sub-block* is a module inside whose ``forward`` a skip connection joins (a residual add or
  a channel concat of 4-D maps), together with every other module of the same class (so the
  stride-2 inverted residuals of a MobileNetV2, which have no skip, are blocks as their
  siblings are). When one sub-block holds another, the inner one is kept, unless its map has
  another shape than the outer one's (an attention module's concat inside a residual branch).
- a model with no skip connection at all is a plain chain (VGG): each conv followed by an
  optional normalisation and an activation module is a unit, named by its conv.
- a model with neither (a vision transformer) has its *token blocks* as candidates: modules in
  whose ``forward`` a residual add of (B, N, D) token sequences joins; a block's tokens are read
  as a map (B, D, s, s) after dropping the P leading class/register tokens, P the smallest count
  (at most 8) that leaves a square number s^2 of patch tokens (``tokens_to_map``). Module-name
  globs (``--points 'blocks.*'``) take such token blocks too, rather than 4-D tensors nested in them.
- stages are runs of equal spatial resolution of the points' outputs, in forward order.
- a point's tap (pre-/post-activation, PURSUhInT §4.2) is the activation module that produces
  the sub-block's output, when that module runs once per forward pass; otherwise pre and post
  are both the sub-block's output.
- a sub-block that returns a tuple, list or dict (RepDistiller's ``(out, preact)`` on a stage's last
  block, ``(features, aux)`` pairs, a neck's dict) counts by its *main* map: the 4-D element that the
  rest of the network reads (found from which tensors are used outside the block, not by position).
  An element from which an activation function made the main map is its pre-activation, read when
  ``preact`` features are asked for.

The forward pass runs on a zero image in eval mode with forward hooks on every module and a
``TorchFunctionMode`` that sees each join, so Python control flow in ``forward`` (e.g. a branch
on the input size) is no obstacle, unlike symbolic tracing. Nothing is kept after the call.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .features import POINTS_ATTR, FeatureContract, PointSpec

ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softplus,
)  # fmt: skip
NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm, nn.SyncBatchNorm)
_JOINS = {"add", "add_", "__add__", "__iadd__", "__radd__", "cat", "concat", "concatenate"}
_ACTIVATION_FUNCTIONS = {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardtanh",
                         "sigmoid", "tanh", "softplus", "prelu"}  # fmt: skip


@dataclass(frozen=True)
class Discovery:
    """What one traced forward pass tells about a model.

    Attributes:
        points: candidate sub-blocks in forward order.
        classifier: module path of the last linear layer (the logits' rows), None when there is none.
        output_shape: shape of the model's output for one image, None when it is not one tensor.
        notes: what was left out and why (shared activations, modules called twice, ...).
        logits: for a model whose ``forward`` returns a tuple, list or dict: the element holding the
            logits (the one (1, K) tensor, or the last linear layer's output among several); None
            when the output is one tensor or holds no such element.
    """

    points: list[PointSpec]
    classifier: str | None
    output_shape: tuple[int, ...] | None
    notes: list[str] = field(default_factory=list)
    logits: int | str | None = None


@dataclass
class _Call:
    path: str
    kind: str  # qualified class name of the module (its original one for an unflattened torch.export program)
    inputs: tuple[int, ...]
    output: int | None
    shape: tuple[int, ...] | None
    order: int
    elements: tuple[tuple[int | str, int, tuple[int, ...]], ...] = ()  # (key, id, shape) of a tuple/list/dict output's tensors
    key: int | str | None = None  # the main element, once resolved
    preact: int | str | None = None

    def is_a(self, classes: tuple[type, ...]) -> bool:
        return self.kind in {qualified(c) for c in classes}


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _Tracer(TorchFunctionMode):
    """Records module calls (through hooks) and the scope of every join (through the mode)."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        super().__init__()
        self.kinds = kinds
        self.stack: list[str] = [""]
        self.calls: list[_Call] = []
        self.join_scopes: list[str] = []
        self.token_scopes: list[str] = []  # residual adds of (B, N, D) token sequences
        self.keep: list[torch.Tensor] = []  # holds every seen tensor so that id() stays unique
        self.used_in: dict[int, list[str]] = {}  # tensor id -> scopes of the functions that read it
        self.activated: dict[int, int] = {}  # id of an activation function's output -> id of its input

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # ATen overloads (add.Tensor, cat.default) are what an exported program's interpreter calls
        name = getattr(func, "__name__", "").split(".")[0]
        if name in _JOINS and _is_join(args, out):
            self.join_scopes.append(self.stack[-1])
        elif name.startswith(("add", "__add__", "__iadd__", "__radd__")) and _is_token_join(args, out):
            self.token_scopes.append(self.stack[-1])
        if name not in ("size", "dim", "__get__", "__len__"):
            for t in _flat(args):
                if isinstance(t, torch.Tensor):
                    self.used_in.setdefault(id(t), []).append(self.stack[-1])
        if name.rstrip("_") in _ACTIVATION_FUNCTIONS and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            self.activated[id(out)] = id(args[0])
            self.keep += [args[0], out]
        return out

    def hooks(self, path: str):
        def pre(module, inputs):
            self.stack.append(path)

        def post(module, inputs, output):
            self.stack.pop()
            tensors = [t for t in _flat(inputs) if isinstance(t, torch.Tensor)]
            self.keep += tensors
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            if isinstance(output, torch.Tensor):
                self.keep.append(output)
            out_id = id(output) if isinstance(output, torch.Tensor) else None
            items = list(output.items() if isinstance(output, dict) else enumerate(output) if isinstance(output, list | tuple) else ())
            elements = tuple((k, id(v), tuple(v.shape)) for k, v in items if isinstance(v, torch.Tensor))
            self.keep += [v for _, v in items if isinstance(v, torch.Tensor)]
            kind = self.kinds.get(path) or qualified(type(module))
            self.calls.append(_Call(path, kind, tuple(id(t) for t in tensors), out_id, shape, len(self.calls), elements))

        return pre, post


def discover_points(
    model: nn.Module,
    input_size: Sequence[int],
    within: str | None = None,
    patterns: Sequence[str] | None = None,
    kinds: Mapping[str, str] | None = None,
    required: bool = True,
) -> Discovery:
    """Find the candidate hint points of ``model`` from one forward pass.

    Args:
        model: any module taking a (1, 3, H, W) image.
        input_size: (H, W) of the traced image; stages depend on it.
        within: only points inside this submodule (e.g. ``backbone`` of a detector).
        patterns: module-name globs (``layer*.?``) that name the candidates instead of the rules above.
        kinds: module path -> qualified class name, where a module's Python class is not its
            original one (``torch.export.unflatten`` makes every module an ``InterpreterModule``).
        required: raise when no candidate is found; else return none, the reason in ``notes``
            (a model used with logit methods only needs none).

    Raises:
        ValueError: the model cannot run on a (1, 3, H, W) image, or no candidate was found (``required``).
    """
    tracer = _Tracer(kinds or {})
    handles = []
    for path, module in model.named_modules():
        if path:
            pre, post = tracer.hooks(path)
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    was_training = model.training
    x = torch.zeros(1, 3, *input_size, device=_device(model))
    try:
        with torch.no_grad(), tracer:
            out = model.eval()(x)
    except Exception as e:
        raise ValueError(f"cannot trace a forward pass on a (1, 3, {input_size[0]}, {input_size[1]}) image: {e}") from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    calls, notes = tracer.calls, []
    _resolve_elements(calls, tracer)
    scope = [c for c in calls if within is None or c.path == within or c.path.startswith(within + ".")]
    if patterns:
        units = _matching(scope, patterns)
    else:
        units = _sub_blocks(scope, tracer.join_scopes) or _plain_chain(scope, notes) or _sub_blocks(scope, tracer.token_scopes, tokens=True)
    points = _specs(units, calls, notes)
    if not points:
        where = f" inside '{within}'" if within else ""
        reason = (f"no candidate hint points found{where}: no residual/concat sub-block, no conv-norm-activation unit and no "
                  "token block produces a map; name the candidates with module-name globs (--points 'stage*.block*')")  # fmt: skip
        if required or patterns:
            raise ValueError(reason)
        notes.append(reason)
    output_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
    linears = [c for c in calls if c.is_a((nn.Linear,))]
    logits = _logits_element(out, linears[-1].output if linears else None)
    return Discovery(points, linears[-1].path if linears else None, output_shape, notes, logits)


def _logits_element(out, last_linear: int | None) -> int | str | None:
    """Which element of a tuple, list or dict output holds the logits: the only (1, K) tensor, else
    the one the last linear layer made."""
    if isinstance(out, torch.Tensor):
        return None
    items = list(out.items() if isinstance(out, dict) else enumerate(out) if isinstance(out, list | tuple) else ())
    rows = [(k, v) for k, v in items if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape[0] == 1]
    if len(rows) == 1:
        return rows[0][0]
    return next((k for k, v in rows if id(v) == last_linear), None)


def _resolve_elements(calls: list[_Call], tracer: _Tracer) -> None:
    """Give each call that returned a tuple, list or dict the id and shape of its main 4-D element:
    the one read outside the module (by a later module or function), else the only 4-D one. The
    element the main one was activated from (``F.relu(preact)``) is its pre-activation."""
    for c in calls:
        maps = [e for e in c.elements if len(e[2]) == 4]
        if not maps:
            continue
        outside = [e for e in maps if any(s != c.path and not s.startswith(c.path + ".") for s in tracer.used_in.get(e[1], []))]
        main = outside[0] if outside else maps[0] if len(maps) == 1 else None
        if main is None:
            continue
        c.key, c.output, c.shape = main[0], main[1], main[2]
        c.preact = next((e[0] for e in maps if e is not main and tracer.activated.get(main[1]) == e[1]), None)


def _sub_blocks(calls: list[_Call], join_scopes: list[str], tokens: bool = False) -> list[_Call]:
    scopes = {s for s in join_scopes if s}
    kind_of = {c.path: c.kind for c in calls}
    kinds = {kind_of[s] for s in scopes if s in kind_of}
    found = {c.path: c for c in calls if c.kind in kinds and (_is_tokens(c) if tokens else _is_map(c))}

    def same_map(a: _Call, b: _Call) -> bool:
        return a.shape[1:] == b.shape[1:]

    # of nested sub-blocks the inner ones are kept (a stage's outer skip around its blocks), unless the
    # inner one makes a map of another shape (a spatial-attention module concatenating its mean and
    # max maps inside a residual branch): then it is a part of the outer block, not a block
    kept = [c for p, c in found.items()
            if not any(q != p and q.startswith(p + ".") and same_map(found[q], c) for q in found)
            and all(same_map(e, c) for q, e in found.items() if q != p and p.startswith(q + "."))]  # fmt: skip
    return sorted(kept, key=lambda c: c.order)


def _plain_chain(calls: list[_Call], notes: list[str]) -> list[_Call]:
    """Conv (-> norm) -> activation units; returned as the conv's call with the activation as its output."""
    by_input: dict[int, list[_Call]] = {}
    for c in calls:
        for i in c.inputs[:1]:
            by_input.setdefault(i, []).append(c)
    units = []
    for conv in (c for c in calls if c.is_a((nn.Conv2d,))):
        nxt = _next(by_input, conv, NORMS)
        act = _next(by_input, nxt or conv, ACTIVATIONS)
        last = act or nxt
        if last is None:
            continue
        if act is None:
            notes.append(f"{conv.path}: no activation module follows; its point gives the normalised map")
        units.append(_Call(conv.path, conv.kind, conv.inputs, last.output, last.shape, last.order))
    return units


def _next(by_input: dict[int, list[_Call]], call: _Call, kinds: tuple[type, ...]) -> _Call | None:
    users = [c for c in by_input.get(call.output, []) if c.order > call.order and c.is_a(kinds)]
    return users[0] if users else None


def _matching(calls: list[_Call], patterns: Sequence[str]) -> list[_Call]:
    hit = {c.path: c for c in calls if any(fnmatch.fnmatchcase(c.path, p) for p in patterns) and (_is_map(c) or _is_tokens(c))}
    outer = [c for p, c in hit.items() if not any(p.startswith(q + ".") for q in hit)]
    return sorted(outer, key=lambda c: c.order)


def _specs(units: list[_Call], calls: list[_Call], notes: list[str]) -> list[PointSpec]:
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.path] = counts.get(c.path, 0) + 1
    specs, stage, size = [], 0, None
    for unit in units:
        if counts[unit.path] > 1 and not unit.is_a((nn.Conv2d,)):
            notes.append(f"{unit.path}: runs {counts[unit.path]} times per forward pass (shared weights); left out")
            continue
        if unit.shape[-2:] != size:
            stage, size = stage + 1, unit.shape[-2:]
        if _is_tokens(unit):
            specs.append(PointSpec(unit.path, stage, None, unit.key, None, token_prefix(unit.shape[1])))
            continue
        tap = _tap(unit, calls, counts, notes)
        specs.append(PointSpec(unit.path, stage, tap, unit.key if tap is None else None, unit.preact if tap is None else None))
    return specs


def _tap(unit: _Call, calls: list[_Call], counts: dict[str, int], notes: list[str]) -> str | None:
    if unit.is_a((nn.Conv2d,)):  # a plain-chain unit: its output is its activation's
        acts = [c for c in calls if c.output == unit.output and c.order == unit.order and c.is_a(ACTIVATIONS)]
    else:
        inside = [c for c in calls if c.path.startswith(unit.path + ".") and c.order < unit.order]
        acts = [c for c in inside if c.output == unit.output and c.is_a(ACTIVATIONS)]
    if not acts:
        return None
    act = acts[-1]
    if counts[act.path] > 1:
        notes.append(f"{unit.path}: its final activation {act.path} also runs elsewhere; pre-activation features are not available")
        return None
    return act.path


def _is_map(call: _Call) -> bool:
    return call.shape is not None and len(call.shape) == 4


def _is_tokens(call: _Call) -> bool:
    """A (1, N, D) token sequence whose patch tokens make a square map."""
    return call.shape is not None and len(call.shape) == 3 and token_prefix(call.shape[1]) is not None


def token_prefix(n: int) -> int | None:
    """How many leading class/register tokens to drop so that a square number (>= 4) of patch tokens stays."""
    return next((p for p in range(9) if n - p >= 4 and math.isqrt(n - p) ** 2 == n - p), None)


def _is_token_join(args: tuple, out) -> bool:
    tensors = [t for t in _flat(args) if isinstance(t, torch.Tensor)]
    return len(tensors) >= 2 and isinstance(out, torch.Tensor) and out.dim() == 3 and all(t.shape == out.shape for t in tensors)


def _is_join(args: tuple, out) -> bool:
    tensors = [t for t in _flat(args) if isinstance(t, torch.Tensor)]
    if len(tensors) < 2 or not isinstance(out, torch.Tensor) or out.dim() != 4:
        return False
    return all(t.dim() == 4 and t.shape[0] == out.shape[0] and t.shape[-2:] == out.shape[-2:] for t in tensors)


def _flat(items) -> list:
    out = []
    for item in items:
        out += _flat(item) if isinstance(item, list | tuple) else [item]
    return out


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def attach_points(
    model: nn.Module,
    input_size: Sequence[int],
    patterns: Sequence[str] | None = None,
    within: str | None = None,
    kinds: Mapping[str, str] | None = None,
    required: bool = True,
) -> Discovery:
    """Discover (or take from ``patterns``) the model's hint points and store them on the instance.

    Afterwards ``hint_points(model)``, ``forward_features(model, ...)`` and every stage that reads
    the feature contract work on ``model``; attached points take precedence over a zoo model's
    declared ones. The model's class, forward and weights are untouched; a model whose ``forward``
    returns a tuple, list or dict holding its logits (``(logits, features)``) gets a forward hook
    that returns the logits element (``model.logits_element``), so that training, evaluation and
    export see the logits, as they would from any classifier.
    """
    found = discover_points(model, input_size, within=within, patterns=patterns, kinds=kinds, required=required)
    setattr(model, POINTS_ATTR, found.points)
    if not found.points:  # what a hint method will be told
        model.hint_points_note = found.notes[-1]
    if getattr(model, "classifier_name", None) is None:
        model.classifier_name = found.classifier
    if found.logits is not None and getattr(model, "logits_element", None) is None:
        model.logits_element = found.logits
        model.register_forward_hook(LogitsOf(found.logits))
    return found


class LogitsOf:
    """A forward hook returning one element of a module's tuple, list or dict output (a class, not a
    closure, so that a model carrying it can be pickled or deep-copied)."""

    def __init__(self, element: int | str):
        self.element = element

    def __call__(self, module: nn.Module, inputs: tuple, output):
        return output[self.element]


def ensure_points(model: nn.Module, input_size: Sequence[int], patterns: Sequence[str] | None = None) -> None:
    """Attach points to a model that has none yet (declared or attached), or the ones ``patterns`` name."""
    if patterns or (getattr(model, POINTS_ATTR, None) is None and not isinstance(model, FeatureContract)):
        attach_points(model, input_size, patterns=patterns)


def program_module(program: torch.export.ExportedProgram) -> tuple[nn.Module, dict[str, str]]:
    """A ``torch.export`` program as a module tree that hooks (hint points) attach to.

    ``torch.export.unflatten`` restores the original module paths, each as an ``InterpreterModule``;
    the original classes come from the graph's ``nn_module_stack`` records, for ``kinds`` of
    ``discover_points``. The program keeps the shapes it was exported with: a static batch size
    stays static.
    """
    module = torch.export.unflatten(program)
    kinds: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            kinds.setdefault(path, cls if isinstance(cls, str) else qualified(cls))
    return module, kinds
