"""INT8 as a Q/DQ ONNX from static, per-channel calibration on the user's data.

Q/DQ is the one INT8 form that ONNX Runtime, TensorRT 8.x, 10.x and 11 all run (ONNX Runtime's
quantization guide; TensorRT's explicit-quantization guide), but the two want different activation
types, so there are two targets:

* ``cpu``: unsigned asymmetric activations, signed symmetric per-channel weights (U8S8). ONNX
  Runtime's x86 integer kernels (VNNI, AMX) run this; measured here, resnet32x4 at batch 32 ran
  at 0.30x the fp32 time, while S8S8 ran at 1.17x (slower than fp32).
* ``tensorrt``: signed symmetric activations and weights (S8S8), the only INT8 TensorRT accepts.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compressor.io import atomic_write


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an iterator of (B, 3, H, W) batches."""

    def __init__(self, input_name: str, batches: Iterator[np.ndarray]):
        self.input_name, self.batches = input_name, batches

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}


TARGETS = ("cpu", "tensorrt")


QUANTIZABLE = ("Conv", "Gemm", "MatMul")  # the operators whose inputs get Q/DQ: the layers sensitivity and fallback speak of


def quantizable_layers(fp32_path: str | Path) -> list[tuple[str, str]]:
    """(node name, operator) of every quantizable layer, in forward order, named as in the graph
    ``quantize_qdq`` quantizes (after ONNX Runtime's pre-processing)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        return [(n.name, n.op_type) for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE]


def _after_last_layer(graph) -> list[str]:
    """Nodes that no quantizable layer depends on: what follows the last layers (a detector's box
    decoding, a softmax). They stay float: INT8 box coordinates in pixels and INT8 probabilities
    lose what the layers kept, and runtimes gain nothing from them."""
    producer = {o: n for n in graph.node for o in n.output}
    needed, stack = set(), [n for n in graph.node if n.op_type in QUANTIZABLE]
    while stack:
        node = stack.pop()
        if node.name not in needed:
            needed.add(node.name)
            stack += [producer[i] for i in node.input if i in producer]
    return [n.name for n in graph.node if n.name not in needed]


def quantize_qdq(
    fp32_path: str | Path, out_path: str | Path, batches: Iterator[np.ndarray], method: str = "minmax", target: str = "cpu",
    only: list[str] | None = None, keep_float: list[str] | None = None, ranges: Path | None = None,
) -> Path:  # fmt: skip
    """Calibrate on ``batches`` and write a Q/DQ INT8 model.

    Args:
        method: ``minmax`` or ``percentile`` (99.999th) activation ranges.
        target: ``cpu`` (U8S8, for ONNX Runtime) or ``tensorrt`` (S8S8 symmetric).
        only: quantize these layers alone (names from ``quantizable_layers``); None: every layer.
        keep_float: layers left without Q/DQ (float fallback). What follows the last layers stays float.
        ranges: a calibration cache (JSON) for calls that calibrate on the same batches, as the
            sensitivity sweep's do: read when it exists (``batches`` are then not run), written after
            calibrating when not. ONNX Runtime's ``calibration_cache_path``; where the installed
            version lacks it, every call calibrates.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; known: {', '.join(methods)}")
    if target not in TARGETS:
        raise ValueError(f"unknown INT8 target {target!r}; known: {', '.join(TARGETS)}")
    signed = target == "tensorrt"
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    input_name = onnx.load(str(fp32_path)).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        exclude = [*(keep_float or []), *_after_last_layer(onnx.load(str(pre)).graph)]
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(quantized),
            _Reader(input_name, batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True},
            nodes_to_quantize=only,
            nodes_to_exclude=exclude or None,
            **({"calibration_cache_path": str(ranges)} if ranges is not None and _caches_calibration() else {}),
        )
        model = onnx.load(str(quantized))
    if not signed:
        _float_layers_stay_float(model.graph)
    data = model.SerializeToString()
    return atomic_write(out_path, lambda f: f.write(data))


def _caches_calibration() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _float_layers_stay_float(graph) -> None:
    """Make the float layers of a U8S8 Q/DQ graph stay float, and fast, in ONNX Runtime.

    A float layer (a Conv or Gemm with a float weight) whose input is a per-tensor DequantizeLinear
    meets two ONNX Runtime graph transformers. ``WeightBiasQuantization`` (ONNX Runtime >= 1.20,
    ``onnxruntime/core/optimizer/qdq_transformer/weight_bias_quantization.cc``) quantizes its float
    weight per tensor and fuses it into an integer kernel: the fallback would silently be INT8, and
    worse than ours. It leaves the layer alone only while the bias is not an initializer, which is
    what ``quantize_static`` writes (an int32 bias behind a DequantizeLinear), but then the NCHWc
    transformer, which needs constant weights and bias, passes the layer by, and a depthwise layer
    runs in the generic grouped convolution, measured over 20x slower than in the fp32 graph (batch 32).
    So the layer gets its float bias back and reads its input through its own per-channel
    DequantizeLinear (the same scale and zero point for every channel: the same numbers), which
    ``WeightBiasQuantization`` does not match and the NCHWc transformer does not care about.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def constant(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    added: dict[str, list] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.input[1] not in inits:
            continue
        dq = producer.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or constant(dq.input[1]).size != 1:
            continue
        bias = producer.get(node.input[2]) if len(node.input) > 2 else None
        if bias is not None and bias.op_type == "DequantizeLinear" and all(i in inits for i in bias.input[:2]):
            value = constant(bias.input[0]).astype(np.float64) * constant(bias.input[1]).astype(np.float64)
            graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), f"{node.name}_float_bias"))
            node.input[2] = f"{node.name}_float_bias"
        weight = inits[node.input[1]].dims
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            axis, channels = 1, weight[1] * attrs.get("group", 1)
        else:
            axis, channels = (0 if attrs.get("transA") else 1), weight[1 if attrs.get("transB") else 0]
        scale = constant(dq.input[1])
        zero = constant(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.uint8)
        names = [f"{node.name}_input_scale", f"{node.name}_input_zero_point"]
        graph.initializer.extend(
            numpy_helper.from_array(np.full(channels, v, v.dtype), k) for v, k in zip((scale, zero), names, strict=True)
        )
        per_channel = helper.make_node(
            "DequantizeLinear", [dq.input[0], *names], [f"{node.name}_input"], name=f"{node.name}_input_dq", axis=axis
        )
        added.setdefault(dq.output[0], []).append(per_channel)  # right after the DequantizeLinear it copies
        node.input[0] = per_channel.output[0]
    nodes = [m for n in graph.node for m in (n, *added.get(n.output[0], []))]
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    unused = [n for n in nodes if n.op_type == "DequantizeLinear" and n.output[0] not in used]  # the int32 biases' old ones
    nodes = [n for n in nodes if not any(n is u for u in unused)]
    used = {i for n in nodes for i in n.input}
    orphans = {i for n in unused for i in n.input if i not in used}
    kept = [i for i in graph.initializer if i.name not in orphans]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)


def fp16_islands(path: str | Path, layers: list[str]) -> Path:
    """Rewrite ``path`` so that the float-fallback ``layers`` (Conv/Gemm/MatMul node names) compute in
    FP16: a Cast to FP16 on their activation input, FP16 copies of their weight and bias, a Cast back
    to FP32 on their output. TensorRT 8.5-10 runs layers without Q/DQ at FP16 when the FP16 flag is
    set; TensorRT 11 builds strongly typed networks whose precision is the ONNX's, so the fallback
    layers are made FP16 in the file (TensorRT's strongly typed networks guide)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    wanted, nodes = set(layers), []
    for node in graph.node:
        if node.name not in wanted:
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if not name:
                continue
            half = f"{name}_fp16"
            if name in inits:  # a weight or a bias: an FP16 copy
                if half not in inits:
                    inits[half] = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), half)
                    graph.initializer.append(inits[half])
            else:
                half = f"{name}_fp16_{node.name}"
                nodes.append(helper.make_node("Cast", [name], [half], name=f"{node.name}_CastFP16_{k}", to=TensorProto.FLOAT16))
            node.input[k] = half
        out = node.output[0]
        node.output[0] = f"{out}_fp16"
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [node.output[0]], [out], name=f"{node.name}_CastFP32", to=TensorProto.FLOAT))
    missing = wanted - {n.name for n in graph.node}
    if missing:
        raise ValueError(f"no nodes named {sorted(missing)} in {path.name}")
    del graph.node[:]
    graph.node.extend(nodes)
    data = model.SerializeToString()
    return atomic_write(path, lambda f: f.write(data))
