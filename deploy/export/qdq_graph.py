"""A Q/DQ ONNX classifier or detector as a trainable PyTorch module: quantization-aware training on
the very graph ONNX Runtime (or TensorRT) runs, and the Q/DQ ONNX written back from what it learned.

``QdqGraph`` executes the nodes of a Q/DQ model written by ``quantize_qdq`` with PyTorch ops:

* every ``QuantizeLinear`` -> ``DequantizeLinear`` pair on an activation is the fake quantizer
  ``fake_quant`` with the pair's zero point (fixed) and its scale learned by LSQ (Esser et al.,
  "Learned Step Size Quantization", ICLR 2020: straight-through rounding, the step size's gradient
  scaled by 1/sqrt(N Q_P)). One scale initializer is one parameter, even where ONNX Runtime shares
  it between tensors (a Flatten after a pooling).
* every ``DequantizeLinear`` of an INT8 weight holds the float weight as the parameter; the forward
  uses it quantized per output channel, symmetric, step max|w|/127 (ONNX Runtime's rule for
  ``WeightSymmetric``), so weights and their steps stay consistent as they train.
* a bias stays float and is used rounded to int32 at step s_in * s_w, as the integer kernels do.

Activations are uint8 asymmetric for the ``cpu`` target and int8 symmetric for ``tensorrt``:
whatever the graph's zero points say. ONNX Runtime removes a ReLU whose output is quantized to
uint8 with zero point 0 (the clamp at 0 is the ReLU), so the fake quantizer applies it here too.
BatchNormalization left in the graph (not folded into a convolution, e.g. a pre-activation block)
runs with its running statistics, i.e. frozen, as in the exported model.

``write_onnx`` writes the same graph with the learned weights and steps (no recalibration): its
ONNX Runtime outputs equal this module's up to the integer kernels' requantization rounding.

A detector's graph (``outputs``) returns its output convolutions' raw maps to the YOLO loss; its
box decoding runs in float after them, as deployed. Hint points and the classifier's input are
exposed through small ``Point`` modules that forward hooks attach to, at the tensors of the float
model's points (found from the exporter's node scopes, ``/layer1/layer1.0/...``), so every hint
method reads features from the quantized student.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from compressor.errors import UserError
from compressor.io import atomic_write

WEIGHT_QMAX = 127  # symmetric int8 weights: [-127, 127], zero point 0


class _RoundSTE(torch.autograd.Function):
    """Round half to even (as ONNX QuantizeLinear) forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward, gradient times ``factor`` backward (LSQ's step-size gradient scale)."""
    return (x - x * factor).detach() + x * factor


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, grad_factor: float = 1.0):
    """DequantizeLinear(QuantizeLinear(x)) = s (clamp(round(x / s) + z, qmin, qmax) - z), with LSQ's
    gradients: 1 for x inside the range and 0 outside; for s, round(x/s) - x/s inside and
    qmin - z or qmax - z outside, times ``grad_factor``. ``scale`` may be per channel (broadcast)."""
    s = _scale_grad(scale, grad_factor).abs().clamp_min(1e-12)  # a step is a magnitude: an update past 0 cannot flip it
    q = torch.clamp(_RoundSTE.apply(x / s) + zero_point, qmin, qmax)
    return (q - zero_point) * s


def weight_scale(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric step max|w| / 127 along ``axis`` (shape broadcastable to the weight)."""
    dims = [d for d in range(weight.dim()) if d != axis]
    return (weight.detach().abs().amax(dim=dims, keepdim=True) / WEIGHT_QMAX).clamp_min(1e-12)


def _qrange(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def module_path(node_name: str) -> str:
    """The module path of a node from the exporter's scope: ``/layer2/layer2.0/downsample/downsample.0/Conv``
    -> ``layer2.0.downsample.0`` (a container's child is named ``parent.index``)."""
    path, last = "", ""
    for part in node_name.strip("/").split("/")[:-1]:
        if last and part.startswith(last + "."):
            path += part[len(last) :]
        else:
            path = f"{path}.{part}" if path else part
        last = part
    return path


@dataclass(frozen=True)
class PointSite:
    """Where a float model's hint point lies in the graph: its last node, and whether that node is
    the point's final ReLU (then its input is the pre-activation)."""

    name: str  # the float model's module path
    stage: int
    node: int  # index of the point's last node
    has_tap: bool


class Point(nn.Module):
    """A place for hooks: called with (pre-activation, feature), returns the feature."""

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        return post


class Classifier(nn.Module):
    """The classifier's input passes through here (the embedding hooks read its input)."""

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding


class QdqGraph(nn.Module):
    """A Q/DQ ONNX classifier as a module; see the module docstring.

    Args:
        model: the Q/DQ model (from ``quantize_qdq``).
        float_weights: the float initializers of the model it was quantized from (its
            pre-processed fp32 graph), by name; weights start from them rather than from their
            INT8 rounding.
        points: the float model's hint points as (module path, stage, has a final activation).
        classifier: the float model's classifier module path (its input is the embedding).
        outputs: module paths whose outputs ``forward`` returns as a list instead of the graph's
            first output (a detector's raw maps, which its training loss reads; the box decoding
            after them stays in the graph, in float, for ``write_onnx``).
    """

    classifier_name = "classifier"

    def __init__(self, model: onnx.ModelProto, float_weights: dict[str, np.ndarray] | None = None,
                 points: Sequence[tuple[str, int, bool]] = (), classifier: str | None = None, outputs: Sequence[str] = ()):  # fmt: skip
        super().__init__()
        self.proto = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.input_name = graph.input[0].name
        self.output_names = [o.name for o in graph.output]
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        float_weights = float_weights or {}
        self.act_scales = nn.ParameterList()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self._act: dict[str, int] = {}  # scale initializer name -> index in act_scales
        self._q: dict[str, tuple[int, str, int, int]] = {}  # Q output -> (scale index, zero point name, qmin, qmax)
        self._weight: dict[str, tuple[int, int]] = {}  # DQ output -> (index in weights, axis)
        self._bias: dict[str, tuple[int, int, int, str]] = {}  # DQ output -> (index in biases, weight index, its axis, input scale)
        self._const: dict[str, str] = {}  # initializer name -> buffer name
        producers = {o: n for n in self.nodes for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for n in self.nodes:
            if n.op_type == "QuantizeLinear":
                scale, zp = n.input[1], n.input[2]
                if scale not in self._act:
                    self._act[scale] = len(self.act_scales)
                    self.act_scales.append(nn.Parameter(torch.tensor(float(inits[scale]))))
                self._q[n.output[0]] = (self._act[scale], zp, *_qrange(inits[zp].dtype))
        for n in self.nodes:  # weights first: a bias's step needs its weight
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8:
                axis = _attr(n, "axis", 1)
                source = n.input[0].removesuffix("_quantized")
                value = float_weights.get(source)
                if value is None or value.shape != inits[n.input[0]].shape:
                    value = _dequantize(inits[n.input[0]], inits[n.input[1]], inits[n.input[2]], axis)
                self._weight[n.output[0]] = (len(self.weights), axis)
                self.weights.append(nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32))))
        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int32:
                layer = consumers[n.output[0]][0]
                act_dq = producers[layer.input[0]]
                act_q = producers[act_dq.input[0]]
                source = n.input[0].removesuffix("_quantized")
                value = float_weights.get(source, _dequantize(inits[n.input[0]], inits[n.input[1]], inits[n.input[2]], 0))
                self._bias[n.output[0]] = (len(self.biases), *self._weight[layer.input[1]], act_q.input[1])
                self.biases.append(nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32))))
        quantized = {n.input[0] for n in self.nodes if n.op_type == "DequantizeLinear"}
        for name, value in inits.items():
            if name not in quantized and name not in self._act:
                self._const[name] = f"c{len(self._const)}"
                self.register_buffer(self._const[name], torch.from_numpy(np.array(value)), persistent=False)
        self._grad_factor: dict[str, float] = {}
        self._quantized_as = {n.input[0]: n.output[0] for n in self.nodes if n.op_type == "QuantizeLinear"}
        self.points = nn.ModuleList(Point() for _ in points)
        self.sites = _point_sites(self.nodes, points)
        self._site_at = {site.node: k for k, site in enumerate(self.sites)}  # node index -> point
        self.hint_point_specs = [_spec(f"points.{i}", site.stage) for i, site in enumerate(self.sites)]
        self.classifier = Classifier()
        self._classifier_node = _classifier_node(self.nodes, classifier)
        self._raw = [self._seen_as(self.nodes[_module_node(self.nodes, name)].output[0]) for name in outputs]

    @classmethod
    def from_files(cls, fp32: Path, qdq: Path, points: Sequence[tuple[str, int, bool]] = (), classifier: str | None = None,
                   outputs: Sequence[str] = ()) -> QdqGraph:  # fmt: skip
        """The Q/DQ model ``qdq`` that ``quantize_qdq`` wrote from ``fp32``, its weights starting from ``fp32``'s floats."""
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with tempfile.TemporaryDirectory() as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # the graph quantize_qdq names weights in
            weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(pre)).graph.initializer}
        return cls(onnx.load(str(qdq)), weights, points, classifier, outputs)

    def output_step(self) -> float | None:
        """The quantization step of the logits (None when the output is not quantized)."""
        dq = {n.output[0]: n for n in self.nodes if n.op_type == "DequantizeLinear"}
        node = dq.get(self.output_names[0])
        if node is None or node.input[0] not in self._q:
            return None
        return float(self.act_scales[self._q[node.input[0]][0]].detach().abs())

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        env = self._forward(x)
        return [env[name] for name in self._raw] if self._raw else env[self.output_names[0]]

    def graph_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the graph (a detector's boxes and scores), as ONNX Runtime computes them."""
        env = self._forward(x)
        return [env[name] for name in self.output_names]

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        env: dict[str, torch.Tensor] = {self.input_name: x}
        pending: list[tuple[int, torch.Tensor, str]] = []
        for index, node in enumerate(self.nodes):
            if index == self._classifier_node:
                env[node.input[0]] = self.classifier(env[node.input[0]])
            outs = self._run(node, env)
            for name, value in zip(node.output, outs, strict=False):
                env[name] = value
            if index in self._site_at:
                k = self._site_at[index]
                site = self.sites[k]
                pre = env[node.input[0]] if site.has_tap and node.op_type == "Relu" else outs[0]
                pending.append((k, pre if site.has_tap else None, node.output[0]))
        for k, pre, name in pending:
            post = env[self._seen_as(name)]
            self.points[k](post if pre is None else pre, post)
        return env

    def _seen_as(self, name: str) -> str:
        """The name of ``name`` as its consumers see it: after its Q/DQ pair where it has one."""
        return self._quantized_as.get(name, name)

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
        if name == "":
            return None
        if name in env:
            return env[name]
        if name in self._const:
            return getattr(self, self._const[name])
        raise UserError(f"the Q/DQ graph uses {name!r} before it is computed: the graph is not in topological order")

    def _run(self, node: onnx.NodeProto, env: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        op = node.op_type
        if op == "QuantizeLinear":
            index, zp, qmin, qmax = self._q[node.output[0]]
            x = env[node.input[0]]
            factor = self._grad_factor.get(node.output[0])
            if factor is None:  # LSQ: g = 1 / sqrt(N Q_P), N the elements per sample
                factor = self._grad_factor[node.output[0]] = 1.0 / float(np.sqrt(max(x[0].numel(), 1) * max(qmax, 1)))
            z = getattr(self, self._const[zp]).to(x.dtype) if zp in self._const else torch.zeros((), dtype=x.dtype)
            return [fake_quant(x, self.act_scales[index], z, qmin, qmax, factor)]
        if op == "DequantizeLinear":
            out = node.output[0]
            if out in self._weight:
                k, axis = self._weight[out]
                w = self.weights[k]
                return [fake_quant(w, weight_scale(w, axis), torch.zeros(()), -WEIGHT_QMAX, WEIGHT_QMAX)]
            if out in self._bias:
                k = self._bias[out][0]
                step = self.bias_step(out)
                return [_RoundSTE.apply(self.biases[k] / step) * step]
            return [env[node.input[0]]]  # the DQ of an activation pair: its Q already did both
        handler = _OPS.get(op)
        if handler is None:
            raise UserError(f"quantization-aware training: ONNX operator {op} (node {node.name}) is not supported; supported: "
                            f"{', '.join(sorted(_OPS))}, QuantizeLinear, DequantizeLinear")  # fmt: skip
        inputs = [self._value(env, name) for name in node.input]
        out = handler(node, *inputs)
        return list(out) if isinstance(out, tuple | list) else [out]

    def bias_step(self, out: str) -> torch.Tensor:
        """s_in * s_w per output channel (one value for a per-tensor weight) of the bias that DQ output
        ``out`` feeds: the int32 bias step of the integer kernels."""
        _, weight_index, axis, scale_name = self._bias[out]
        s_in = self.act_scales[self._act[scale_name]].detach().abs().clamp_min(1e-12)
        return s_in * weight_scale(self.weights[weight_index], axis).flatten()

    def write_onnx(self, path: str | Path) -> Path:
        """The Q/DQ ONNX with the learned weights and steps (atomic)."""
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        values = self.quantized_initializers()
        for init in model.graph.initializer:
            if init.name in values:
                init.CopyFrom(numpy_helper.from_array(values[init.name], init.name))
        data = model.SerializeToString()
        return atomic_write(Path(path), lambda f: f.write(data))

    @torch.no_grad()
    def quantized_initializers(self) -> dict[str, np.ndarray]:
        """Every initializer the training changed, in its ONNX dtype and shape."""
        values: dict[str, np.ndarray] = {}
        inits = {i.name: i for i in self.proto.graph.initializer}
        for scale, k in self._act.items():
            values[scale] = np.array(self.act_scales[k].abs().clamp_min(1e-12).item(), dtype=np.float32).reshape(tuple(inits[scale].dims))
        dq = {n.output[0]: n for n in self.nodes if n.op_type == "DequantizeLinear"}
        for out, (k, axis) in self._weight.items():
            w = self.weights[k].detach().cpu().float()
            s = weight_scale(w, axis)
            q = torch.clamp(torch.round(w / s), -WEIGHT_QMAX, WEIGHT_QMAX)
            node = dq[out]
            values[node.input[0]] = q.numpy().astype(np.int8)
            values[node.input[1]] = s.flatten().numpy().astype(np.float32).reshape(tuple(inits[node.input[1]].dims))
        for out, (k, *_) in self._bias.items():
            step = self.bias_step(out).cpu()
            node = dq[out]
            values[node.input[0]] = torch.round(self.biases[k].detach().cpu() / step).numpy().astype(np.int32)
            values[node.input[1]] = step.flatten().numpy().astype(np.float32).reshape(tuple(inits[node.input[1]].dims))
        return values


PARITY_DIFFERING = 1.0  # Q/DQ semantics, layer by layer: at most this % of quantized values a step from ONNX Runtime's
PARITY_FLOAT = 1e-3  # and every float operator within this relative error of ONNX Runtime's on the same inputs
PARITY_AGREEMENT = 99.0  # deployment: the same top-1 as ONNX Runtime's integer kernels on at least this % of the images


@torch.no_grad()
def layerwise_semantics(graph: QdqGraph, path: Path, images: np.ndarray) -> dict:
    """Every node of the PyTorch graph fed ONNX Runtime's own inputs (ONNX Runtime with graph
    optimizations off, so each QuantizeLinear/DequantizeLinear runs as the operator defines it):
    the share of quantized values a step or more away from ONNX Runtime's, and the largest relative
    error of a float operator. Layer by layer, so that a one-step difference (a value within float
    error of a rounding boundary, as the two libraries sum convolutions in different orders) is
    counted once instead of spreading through the depth of the network."""
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(onnx.load(str(path)))
    names = [o for n in model.graph.node for o in n.output if o]
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = dict(zip(names, session.run(names, {graph.input_name: images}), strict=True))
    env = {graph.input_name: torch.from_numpy(images), **{k: torch.from_numpy(np.asarray(v)) for k, v in reference.items()}}
    device = next(graph.parameters()).device
    env = {k: v.to(device) for k, v in env.items()}
    was = graph.training
    graph.eval()
    quantized = differing = 0
    worst = 0.0
    for node in graph.nodes:
        if node.op_type == "DequantizeLinear" and node.output[0] not in graph._weight and node.output[0] not in graph._bias:
            continue  # an activation pair's DQ: its Q is compared
        ours = graph._run(node, env)[0].float().cpu()
        theirs = reference[node.output[0]]
        if node.op_type == "QuantizeLinear":
            index, zp, _, _ = graph._q[node.output[0]]
            step = float(graph.act_scales[index].detach().abs())
            zero = float(getattr(graph, graph._const[zp]).float()) if zp in graph._const else 0.0
            expected = (theirs.astype(np.float32) - zero) * step
            differing += int(np.sum(np.abs(ours.numpy() - expected) > 0.5 * step))
            quantized += expected.size
        elif np.issubdtype(theirs.dtype, np.floating) and theirs.size:
            scale = max(float(np.abs(theirs).max()), 1e-12)
            worst = max(worst, float(np.abs(ours.numpy() - theirs).max()) / scale)
    graph.train(was)
    return {"quantized_values": quantized, "differing_pct": round(100.0 * differing / max(quantized, 1), 4),
            "float_max_rel_error": float(f"{worst:.3g}")}  # fmt: skip


@torch.no_grad()
def ort_parity(graph: QdqGraph, path: Path, images: np.ndarray) -> dict:
    """The PyTorch graph (fake quantization) against ONNX Runtime on the written model.

    *Semantics* (``layerwise_semantics``): at most ``PARITY_DIFFERING`` % of the quantized values a
    step apart (measured: 0 % for ResNet, WRN, VGG, MobileNetV2, ShuffleNet, both targets) and every float operator within
    ``PARITY_FLOAT``; a systematic mismatch (another rounding rule, range, zero point or step)
    moves most values of the layer where it sits. *Deployment*: with optimizations on, ONNX
    Runtime fuses the pairs into integer kernels (QLinearConv, ...) that requantize each layer's
    int32 sums with a float multiplier; end to end, such one-step differences compound with
    depth (a random-init resnet32x4 ends with half its logits a step or two apart), so the check
    is the top-1 agreement (>= ``PARITY_AGREEMENT`` %), with the largest logit difference reported.
    """
    from ..runtime.ort_runtime import OrtRuntime

    semantics = layerwise_semantics(graph, path, images[:4])  # every intermediate tensor is held: a few images suffice
    if graph._raw:
        return _detector_parity(graph, path, images, semantics)
    was = graph.training
    graph.eval()
    device = next(graph.parameters()).device
    ours = graph(torch.from_numpy(images).to(device)).float().cpu().numpy()
    graph.train(was)
    fused = OrtRuntime(path).run_all(images)[0]
    step = graph.output_step() or 1.0
    agreement = 100.0 * float(np.mean(ours.argmax(1) == fused.argmax(1)))
    ok = (
        semantics["differing_pct"] <= PARITY_DIFFERING
        and semantics["float_max_rel_error"] <= PARITY_FLOAT
        and agreement >= PARITY_AGREEMENT
    )
    return {"images": len(images), "logit_step": step, "semantics": semantics, "top1_agreement": round(agreement, 2),
            "deployed_max_error_steps": round(float(np.abs(ours - fused).max()) / step, 3),
            "tolerance": {"semantics_differing_pct": PARITY_DIFFERING, "semantics_float_rel_error": PARITY_FLOAT,
                          "top1_agreement": PARITY_AGREEMENT}, "ok": ok}  # fmt: skip


def _detector_parity(graph: QdqGraph, path: Path, images: np.ndarray, semantics: dict) -> dict:
    """A detector's deployment check: ONNX Runtime's detections (its integer kernels, then the float
    decoding) against the PyTorch graph's confident ones, as AP50 (>= ``PARITY_AGREEMENT``; not
    judged when the graph finds nothing), with the largest score difference reported."""
    from ..profile.accuracy import detection_agreement, detections
    from ..runtime.ort_runtime import OrtRuntime

    was = graph.training
    graph.eval()
    device = next(graph.parameters()).device
    boxes, scores = (t.float().cpu().numpy() for t in graph.graph_outputs(torch.from_numpy(images).to(device))[:2])
    graph.train(was)
    fused_boxes, fused_scores = OrtRuntime(path).run_all(images)[:2]
    agreement = detection_agreement(detections(boxes, scores), detections(fused_boxes, fused_scores))
    ok = (semantics["differing_pct"] <= PARITY_DIFFERING and semantics["float_max_rel_error"] <= PARITY_FLOAT
          and (agreement is None or agreement >= PARITY_AGREEMENT))  # fmt: skip
    return {"images": len(images), "semantics": semantics, "detection_agreement": None if agreement is None else round(agreement, 2),
            "deployed_max_score_error": round(float(np.abs(scores - fused_scores).max()), 5),
            "tolerance": {"semantics_differing_pct": PARITY_DIFFERING, "semantics_float_rel_error": PARITY_FLOAT,
                          "detection_agreement": PARITY_AGREEMENT}, "ok": ok}  # fmt: skip


def _spec(name: str, stage: int):
    from compressor.models.features import PointSpec

    return PointSpec(name, stage, tap=name)


def point_node(nodes: Sequence[onnx.NodeProto], name: str) -> int | None:
    """Index of the last node (not a Q/DQ) inside module ``name``'s scope: its output is the
    module's output (None when no node name carries that scope)."""
    inside = [i for i, n in enumerate(nodes) if (p := module_path(n.name)) == name or p.startswith(name + ".")]
    return max(inside, key=lambda i: (nodes[i].op_type not in ("QuantizeLinear", "DequantizeLinear"), i)) if inside else None


def _module_node(nodes: list[onnx.NodeProto], name: str) -> int:
    found = point_node(nodes, name)
    if found is None:
        raise UserError(f"quantization-aware training: module {name} has no node in the exported graph")
    return found


def _point_sites(nodes: list[onnx.NodeProto], points: Sequence[tuple[str, int, bool]]) -> list[PointSite]:
    sites = []
    for name, stage, has_tap in points:
        last = point_node(nodes, name)
        if last is None:
            raise UserError(f"quantization-aware training: hint point {name} has no node in the exported graph (its node names do "
                            "not carry the module scope); use a method without hints, or a model exported by torch.onnx")  # fmt: skip
        sites.append(PointSite(name, stage, last, has_tap))
    return sites


def _classifier_node(nodes: list[onnx.NodeProto], classifier: str | None) -> int | None:
    if classifier is None:
        return None
    found = [i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul") and module_path(n.name) == classifier]
    if not found:
        raise UserError(f"quantization-aware training: the classifier {classifier} has no Gemm/MatMul node in the exported graph")
    return found[-1]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if scale.ndim:
        shape[axis] = -1
    return (q.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.astype(np.float32).reshape(shape)


# --- the float operators, as PyTorch ops (ONNX operator semantics, opset 13-21) --------------------


def _pads2d(node: onnx.NodeProto, x: torch.Tensor, value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...]: symmetric ones go to the op, others are applied here."""
    if _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UserError(f"quantization-aware training: {node.name} uses auto_pad; export with explicit pads (torch.onnx does)")
    pads = list(_attr(node, "pads", [0] * 2 * (x.dim() - 2)))
    half = len(pads) // 2
    begin, end = pads[:half], pads[half:]
    if begin == end:
        return x, begin
    flat = [p for b, e in zip(reversed(begin), reversed(end), strict=True) for p in (b, e)]
    return F.pad(x, flat, value=value), [0] * half


def _conv(node, x, w, b=None):
    x, pads = _pads2d(node, x)
    conv = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}[x.dim()]
    return conv(x, w, b, _attr(node, "strides", 1), pads, _attr(node, "dilations", 1), _attr(node, "group", 1))


def _gemm(node, a, b, c=None):
    a = a.transpose(0, 1) if _attr(node, "transA", 0) else a
    b = b.transpose(0, 1) if _attr(node, "transB", 0) else b
    y = _attr(node, "alpha", 1.0) * (a @ b)
    return y if c is None else y + _attr(node, "beta", 1.0) * c


def _maxpool(node, x):
    x, pads = _pads2d(node, x, value=float("-inf"))
    k = _attr(node, "kernel_shape")
    return F.max_pool2d(x, k, _attr(node, "strides", k), pads, _attr(node, "dilations", 1), bool(_attr(node, "ceil_mode", 0)))


def _avgpool(node, x):
    x, pads = _pads2d(node, x)
    k = _attr(node, "kernel_shape")
    return F.avg_pool2d(x, k, _attr(node, "strides", k), pads, bool(_attr(node, "ceil_mode", 0)), bool(_attr(node, "count_include_pad", 0)))


def _batchnorm(node, x, scale, bias, mean, var):
    """Inference BatchNormalization: the running statistics are constants of the graph (frozen; ONNX
    Runtime may have quantized them like weights, so they can arrive as trainable tensors)."""
    return F.batch_norm(x, mean.detach(), var.detach(), scale, bias, training=False, eps=_attr(node, "epsilon", 1e-5))


def _reshape(node, x, shape):
    dims = [int(d) for d in shape.tolist()]
    if not _attr(node, "allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(node, x):
    axis = _attr(node, "axis", 1) % max(x.dim(), 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _axes(node, axes) -> list[int]:
    return [int(a) for a in (axes.tolist() if axes is not None else _attr(node, "axes", []))]


def _unsqueeze(node, x, axes=None):
    for a in sorted(a % (x.dim() + len(_axes(node, axes))) for a in _axes(node, axes)):
        x = x.unsqueeze(a)
    return x


def _squeeze(node, x, axes=None):
    dims = _axes(node, axes)
    return x.squeeze() if not dims else x.squeeze(tuple(d % x.dim() for d in dims))


def _slice(node, x, starts, ends, axes=None, steps=None):
    index = [slice(None)] * x.dim()
    axes = axes.tolist() if axes is not None else list(range(len(starts)))
    steps = steps.tolist() if steps is not None else [1] * len(starts)
    for s, e, a, st in zip(starts.tolist(), ends.tolist(), axes, steps, strict=True):
        if st != 1:
            raise UserError(f"quantization-aware training: {node.name} slices with step {st}; only step 1 is supported")
        n = x.shape[a]
        index[a] = slice(max(min(s, n), -n), max(min(e, n), -n - 1) if e < 0 else min(e, n))
    return x[tuple(index)]


def _split(node, x, split=None):
    axis = _attr(node, "axis", 0)
    if split is None:
        parts = len(node.output) if _attr(node, "num_outputs") is None else _attr(node, "num_outputs")
        return torch.chunk(x, parts, axis)
    return torch.split(x, [int(s) for s in split.tolist()], axis)


def _gather(node, x, i):
    axis = _attr(node, "axis", 0) % x.dim()
    picked = torch.index_select(x, axis, i.flatten().long() % x.shape[axis])
    return picked.reshape((*x.shape[:axis], *i.shape, *x.shape[axis + 1 :]))


def _div(node, a, b):
    return torch.div(a, b, rounding_mode="trunc") if not a.is_floating_point() else a / b


def _clip(node, x, low=None, high=None):
    return torch.clamp(x, low, high)


def _reduce_mean(node, x, axes=None):
    dims = _axes(node, axes) or list(range(x.dim()))
    return x.mean(dim=dims, keepdim=bool(_attr(node, "keepdims", 1)))


def _pad(node, x, pads, value=None, axes=None):
    if _attr(node, "mode", b"constant") not in (b"constant", "constant") or axes is not None:
        raise UserError(f"quantization-aware training: {node.name}: only constant padding over all axes is supported")
    p = [int(v) for v in pads.tolist()]
    half = len(p) // 2
    flat = [q for b, e in zip(reversed(p[:half]), reversed(p[half:]), strict=True) for q in (b, e)]
    return F.pad(x, flat, value=float(value) if value is not None else 0.0)


def _resize(node, x, roi=None, scales=None, sizes=None):
    """Nearest (asymmetric, floor: ``F.interpolate``'s nearest) and linear (half-pixel or align-corners)
    resizing of the spatial axes; other modes stop with the mode named."""
    text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (("mode", _attr(node, "mode", b"nearest")),
            ("ctm", _attr(node, "coordinate_transformation_mode", b"half_pixel")),
            ("nearest", _attr(node, "nearest_mode", b"round_prefer_floor")))}  # fmt: skip
    if sizes is not None and sizes.numel():
        size = [int(v) for v in sizes[2:]]
    else:
        size = [int(np.floor(d * float(f))) for d, f in zip(x.shape[2:], scales[2:], strict=True)]
    if text["mode"] == "nearest" and text["ctm"] == "asymmetric" and text["nearest"] == "floor":
        return F.interpolate(x, size=size, mode="nearest")
    if text["mode"] == "linear" and text["ctm"] in ("half_pixel", "pytorch_half_pixel", "align_corners") and x.dim() == 4:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=text["ctm"] == "align_corners")
    raise UserError(f"quantization-aware training: Resize {node.name} with mode {text['mode']}, {text['ctm']} coordinates and "
                    f"nearest mode {text['nearest']} is not supported (nearest asymmetric floor, or linear)")  # fmt: skip


def _constant(node):
    return torch.from_numpy(np.array(numpy_helper.to_array(_attr(node, "value"))))


_DTYPES = {1: torch.float32, 6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64}

_OPS = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda node, a, b: a @ b,
    "Add": lambda node, a, b: a + b,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Div": _div,
    "Relu": lambda node, x: F.relu(x),
    "Clip": _clip,
    "Sigmoid": lambda node, x: torch.sigmoid(x),
    "HardSigmoid": lambda node, x: torch.clamp(_attr(node, "alpha", 0.2) * x + _attr(node, "beta", 0.5), 0, 1),
    "HardSwish": lambda node, x: F.hardswish(x),
    "Softmax": lambda node, x: torch.softmax(x, _attr(node, "axis", -1)),
    "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "AveragePool": _avgpool,
    "MaxPool": _maxpool,
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda node, x: x.permute(*_attr(node, "perm", list(reversed(range(x.dim()))))),
    "Concat": lambda node, *xs: torch.cat(xs, _attr(node, "axis")),
    "Split": _split,
    "Slice": _slice,
    "Shape": lambda node, x: torch.tensor(x.shape[_attr(node, "start", 0) : _attr(node, "end", None)], dtype=torch.int64),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Constant": _constant,
    "Identity": lambda node, x: x,
    "Cast": lambda node, x: x.to(_DTYPES[_attr(node, "to")]),
    "ReduceMean": _reduce_mean,
    "Pad": _pad,
    "LeakyRelu": lambda node, x: F.leaky_relu(x, _attr(node, "alpha", 0.01)),
    "Exp": lambda node, x: torch.exp(x),
    "Range": lambda node, start, limit, delta: torch.arange(
        start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device
    ),  # fmt: skip
    "Expand": lambda node, x, shape: x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(int(v) for v in shape))),
    "Resize": _resize,
}
