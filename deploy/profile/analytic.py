"""Analytic figures of an ONNX model: weight bytes and the peak bytes of live activations; MACs.

For a device this machine is not: with the batch dimension fixed, ONNX shape inference gives
every intermediate tensor's shape; walking the nodes in graph order, a tensor is live from the
node that makes it to the last node that reads it (graph outputs to the end), and the peak of the
live total is the activation memory a runtime that frees tensors eagerly needs at least.
Runtimes reuse and pad buffers, so measurements differ; this is the model's own share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def analytic_memory(path: str | Path, batch: int) -> dict[str, int] | None:
    """``{weight_bytes, peak_activation_bytes}`` at ``batch``, or None where shapes stay unknown (dynamic H, W)."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name not in initializers and inp.type.tensor_type.shape.dim:
            first = inp.type.tensor_type.shape.dim[0]
            first.ClearField("dim_param")
            first.dim_value = batch
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an op shape inference does not know: no analytic figure, not a failure
        return None
    sizes: dict[str, int] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        bytes_ = _bytes(info.type.tensor_type)
        if bytes_ is not None:
            sizes[info.name] = bytes_
    weights = sum(int(np.prod(i.dims)) * _itemsize(i.data_type) for i in model.graph.initializer)
    nodes = list(inferred.graph.node)
    last_use = {name: i for i, node in enumerate(nodes) for name in node.input if name}
    for out in inferred.graph.output:
        last_use[out.name] = len(nodes)
    live = {i.name for i in inferred.graph.input if i.name not in initializers}
    if any(name not in sizes for name in live):
        return None
    peak = current = sum(sizes[n] for n in live)
    for i, node in enumerate(nodes):
        for name in node.output:
            if name and name not in initializers:
                if name not in sizes:
                    return None
                live.add(name)
                current += sizes[name]
        peak = max(peak, current)
        for name in [n for n in live if last_use.get(n, -1) <= i]:
            live.discard(name)
            current -= sizes[name]
    return {"weight_bytes": weights, "peak_activation_bytes": peak}


def _bytes(tensor_type) -> int | None:
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if any(d is None for d in dims) or not tensor_type.elem_type:
        return None
    return int(np.prod(dims, dtype=np.int64)) * _itemsize(tensor_type.elem_type)


def _itemsize(elem_type: int) -> int:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def onnx_macs(model: onnx.ModelProto, input_size: tuple[int, int]) -> int | None:
    """Multiply-accumulates of one (1, C, H, W) image: Conv (output elements x C_in/groups x kernel
    area), MatMul and Gemm (M x N x K), as ``count_macs`` counts a PyTorch model; None where shape
    inference cannot size a Conv or MatMul."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in initializers and len(dims) == 4:
            for d, value in zip(dims, (1, None, *input_size), strict=True):
                if value is not None:
                    d.ClearField("dim_param")
                    d.dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return None
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}  # fmt: skip
    shapes.update(initializers)
    total = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if not a or not b or not out or None in a + b + out:
            return None
        if node.op_type == "Conv":  # weight (C_out, C_in/groups, kh, kw)
            total += int(np.prod(out)) * int(np.prod(b[1:]))
        else:
            transposed = node.op_type == "Gemm" and any(x.name == "transB" and x.i for x in node.attribute)
            total += int(np.prod(out)) * (b[-1] if transposed else b[-2])
    return total
