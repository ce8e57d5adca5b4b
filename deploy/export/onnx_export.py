"""PyTorch -> single-file ONNX, simplified, checked numerically against PyTorch on two input shapes."""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from compressor.errors import UserError
from compressor.io import atomic_write

from ..errors import ParityError

RTOL, ATOL = 1e-3, 1e-5  # fp32 parity: torchvision's test_onnx tolerances


@dataclass
class Parity:
    shapes: list[list[int]]
    max_abs: float
    max_rel: float
    ok: bool


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int],
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamo: bool = False,
    simplify: bool = True,
) -> Parity:
    """Write ``model`` as one ``.onnx`` file (no external data) and check it against PyTorch.

    Args:
        opset: 17 by default through the stable (TorchScript-based) exporter; ``dynamo=True``
            uses torch.export, which writes opset >= 18 (torch.onnx documentation) and is refused below.
        dynamic_batch: a symbolic batch axis (checked at batch 1 and 3); else batch 1 fixed
            (checked on two different inputs).

    Raises:
        ValueError: dynamo with opset < 18.
        ParityError: ONNX Runtime's output differs beyond rtol 1e-3 / atol 1e-5 (message has
            the max abs / rel error); nothing is written then.
    """
    if dynamo and opset < 18:
        raise ValueError(f"the dynamo exporter writes opset >= 18; asked for {opset} (use the default exporter for 17)")
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        raise UserError("--dynamo uses torch's torch.export-based exporter, which needs onnxscript: "
                        "pip install 'edge-compressor[dynamo]' (or leave --dynamo out: the stable exporter writes opset 17)")  # fmt: skip
    model = model.eval()
    path = Path(path)
    dummy = torch.randn(1, 3, *input_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        torch_to_onnx(model, dummy, raw, opset, dynamic_batch, dynamo, getattr(model, "output_names", ("logits",)))
        proto = onnx.load(str(raw), load_external_data=True)
        if simplify:
            import onnxslim

            proto = onnxslim.slim(proto)
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
    parity = check_parity(model, data, input_size, dynamic_batch)
    if not parity.ok:
        raise ParityError(
            f"ONNX output differs from PyTorch beyond rtol {RTOL} / atol {ATOL}: max abs error {parity.max_abs:.3g}, "
            f"max rel error {parity.max_rel:.3g} on input shapes {parity.shapes}; the export is not usable"
        )
    atomic_write(path, lambda f: f.write(data))
    return parity


def torch_to_onnx(model: nn.Module, dummy: torch.Tensor, path: Path, opset: int, dynamic_batch: bool, dynamo: bool,
                  outputs: tuple[str, ...] = ("logits",)) -> None:  # fmt: skip
    """Outputs other than ``selected`` (NMS indices, (K, 3)) get the symbolic batch axis first."""
    names = {"input_names": ["input"], "output_names": list(outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stable exporter announces its deprecation on every call
        if dynamo:
            shapes = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
            torch.onnx.export(model, (dummy,), str(path), dynamo=True, opset_version=opset, external_data=False,
                              dynamic_shapes=shapes, **names)  # fmt: skip
        else:
            axes = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs if o != "selected"}} if dynamic_batch else None
            torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset, dynamic_axes=axes,
                              do_constant_folding=True, **names)  # fmt: skip


def check_parity(model: nn.Module, onnx_bytes: bytes, input_size: tuple[int, int], dynamic_batch: bool, seed: int = 0) -> Parity:
    """Run both on two inputs (batch 1 and 3, or two batch-1 inputs) and compare."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(b, 3, *input_size, generator=g) for b in ((1, 3) if dynamic_batch else (1, 1))]
    max_abs = max_rel = 0.0
    ok = True
    for x in inputs:
        with torch.no_grad():
            out = model(x)
        outputs = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
        try:
            got_all = session.run(None, {name: x.numpy()})
        except Exception as e:  # ORT's InvalidArgument: the trace fixed a size the model computes from its input
            detail = " ".join(str(e).split())[-300:]
            raise UserError(f"the exported graph does not run on a batch of shape {list(x.shape)} ({detail}); the model's forward "
                            "turns a size into a constant when traced (len(x), a Python int): write x.shape[0], or export with "
                            "--no-dynamic-batch") from None  # fmt: skip
        for expected, got in zip(outputs, got_all, strict=True):
            if expected.dtype.kind in "iu":  # NMS indices: identical rows for the same boxes and scores
                floats = [torch.from_numpy(g) for g in got_all if g.dtype.kind == "f"]
                reference = model.reference_indices(*floats).numpy() if hasattr(model, "reference_indices") else expected
                ok = ok and _same_rows(reference, got)
                continue
            diff = np.abs(got - expected)
            if diff.size:
                max_abs = max(max_abs, float(diff.max()))
                max_rel = max(max_rel, float((diff / np.maximum(np.abs(expected), 1e-12)).max()))
            ok = ok and bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL))
    return Parity([list(x.shape) for x in inputs], max_abs, max_rel, ok)


def _same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal as sets of rows (the order among exactly tied scores is the runtime's choice)."""
    return a.shape == b.shape and sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
