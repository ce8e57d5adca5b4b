"""Per-layer INT8 sensitivity and the float fallback that keeps an accuracy budget.

The damage of INT8 is rarely spread evenly: a few layers (depthwise convolutions, a first layer
fed raw pixels, a layer with outlier weights or activations) cause most of it, and the standard
answer of deployment tools is to keep those in higher precision. ``sensitivity`` measures, for each
quantizable layer in forward order, the model with that layer alone in INT8 (the others float) and
the model with that layer alone kept float (the others INT8), against the fp32 model on the same
images: top-1 agreement, the logits' SQNR (10 log10 of signal over quantization-noise energy, dB)
and top-1 accuracy; for a detector (``DetectionProbe``), AP50 against the labels, AP50 against the
fp32 model's confident detections, and the SQNR of its ``scores`` output. ``fallback`` then keeps
the most sensitive layers (ranked by the SQNR of quantizing them alone, lowest first) out of INT8
one by one until the top-1 (a detector: AP50) drop on held-out data is within the budget, so the
fewest layers fall back (in FP16 for the ``tensorrt`` target, whose engines run them so; ONNX
Runtime scores the FP16 file itself). ``hint_cka`` says where inside the network the INT8 model
drifts from fp32: the linear CKA (Kornblith et al. 2019) between the two models'
activations at each hint point, on the spatially averaged N x C representations that hint
selection clusters (PURSUhInT, Keser et al., §3.1), with ``compressor.hints``' own CKA.
``kernel_times`` says where INT8 pays on the machine at hand: each layer's ONNX Runtime kernel
time in the fp32 and the all-INT8 model, from its profiler.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compressor.errors import UserError

from ..profile.accuracy import accuracy, agreement, ap50, detection_agreement, detections
from ..runtime.ort_runtime import OrtRuntime
from .int8 import fp16_islands, quantizable_layers, quantize_qdq


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - other)^2), in dB; inf when they are equal."""
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


def _outputs(path: Path, images: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """Every output of an ONNX model on ``images``, run in batches."""
    runtime = OrtRuntime(path)
    runs = [runtime.run_all(images[i : i + batch]) for i in range(0, len(images), batch)]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


@dataclass
class Probe:
    """A classifier's held-out images (N, 3, H, W), their labels, and the fp32 model's logits on them."""

    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray
    metric: ClassVar[str] = "top1"

    @property
    def fp32(self) -> float:
        return accuracy(self.reference, self.labels)["top1"]

    def score(self, path: Path) -> dict[str, float]:
        logits = _outputs(path, self.images)[0]
        return {"agreement": agreement(self.reference, logits), "sqnr_db": round(sqnr_db(self.reference, logits), 3),
                "top1": accuracy(logits, self.labels)["top1"]}  # fmt: skip


@dataclass
class DetectionProbe:
    """A detector's held-out images, their ground truth (per image (M, 5) class, x1, y1, x2, y2 in
    input pixels), and the fp32 model's scores and detections on them. ``score`` gives AP50 against
    the labels; ``agreement``, the AP50 against the fp32 model's confident detections (how much of
    what fp32 finds the variant finds in the same place, None when fp32 finds nothing); ``sqnr_db``,
    the SQNR of the ``scores`` output (objectness x class, what NMS ranks)."""

    images: np.ndarray
    truth: list
    reference: np.ndarray
    found: list
    metric: ClassVar[str] = "AP50"

    @property
    def fp32(self) -> float:
        return ap50(self.found, self.truth)

    def score(self, path: Path) -> dict[str, float | None]:
        boxes, scores = _outputs(path, self.images)[:2]
        found = detections(boxes, scores)
        return {"agreement": detection_agreement(self.found, found),
                "sqnr_db": round(sqnr_db(self.reference, scores), 3), "AP50": ap50(found, self.truth)}  # fmt: skip


def make_probe(fp32: Path, images: np.ndarray, labels) -> Probe | DetectionProbe:
    """``labels``: an array of classes (a classifier), or a list of per-image ground-truth boxes (a detector)."""
    outputs = _outputs(fp32, images)
    if isinstance(labels, np.ndarray):
        return Probe(images, labels, outputs[0])
    return DetectionProbe(images, labels, outputs[1], detections(outputs[0], outputs[1]))


def sensitivity(fp32: Path, calibration: Callable[[], Iterator[np.ndarray]], probe: Probe | DetectionProbe,
                target: str = "cpu", ranges: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Every quantizable layer's damage alone and its rescue alone; ``calibration()`` yields batches
    anew; ``ranges``: a calibration cache shared by every variant (``quantize_qdq``)."""
    layers = quantizable_layers(fp32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variant, ranges = Path(tmp) / "variant.onnx", ranges or Path(tmp) / "ranges.json"
        full = probe.score(quantize_qdq(fp32, variant, calibration(), target=target, ranges=ranges))
        for index, (name, op) in enumerate(layers, start=1):
            alone = probe.score(quantize_qdq(fp32, variant, calibration(), target=target, only=[name], ranges=ranges))
            kept = probe.score(quantize_qdq(fp32, variant, calibration(), target=target, keep_float=[name], ranges=ranges))
            rows.append({"index": index, "layer": name, "op": op, "int8_alone": alone, "float_alone": kept})
    return {"target": target, "images": len(probe.images), "metric": probe.metric, f"fp32_{probe.metric}": probe.fp32, "full_int8": full,
            "layers": rows}  # fmt: skip


def hint_cka(fp32: Path, int8: Path, points: list[str], images: np.ndarray) -> list[dict[str, Any]]:
    """Linear CKA between the fp32 and the INT8 model's activations at each hint point (a module
    path of the exported model); points whose scope no node carries are left out."""
    import onnx

    from compressor.hints.similarity import linear_cka

    from .qdq_graph import point_node

    nodes, int8_nodes = list(onnx.load(str(fp32)).graph.node), list(onnx.load(str(int8)).graph.node)
    in_int8 = {o for n in int8_nodes for o in n.output}

    def comparable(tensor: str) -> str | None:
        """The tensor itself, or, where quantization fused its ReLU into the producer (the Q's clamp),
        the ReLU's output, which both graphs have."""
        if tensor in in_int8:
            return tensor
        users = [n for n in nodes if tensor in n.input]
        relu = users[0].output[0] if len(users) == 1 and users[0].op_type in ("Relu", "Clip") else None
        return relu if relu in in_int8 else None

    found = {name: t for name in points if (i := point_node(nodes, name)) is not None and (t := comparable(nodes[i].output[0]))}
    if not found:
        return []
    quantized = {n.input[0]: n.output[0] for n in int8_nodes if n.op_type == "QuantizeLinear"}
    dequantized = {n.input[0]: n.output[0] for n in int8_nodes if n.op_type == "DequantizeLinear"}
    seen_as = {t: dequantized.get(quantized.get(t, ""), t) for t in found.values()}  # what the INT8 model's next layer reads
    reference = _activations(fp32, list(found.values()), images)
    deployed = _activations(int8, list(seen_as.values()), images)
    rows = []
    for name, tensor in found.items():
        a, b = reference[tensor], deployed[seen_as[tensor]]
        cka = linear_cka([a.reshape(*a.shape[:2], -1).mean(-1), b.reshape(*b.shape[:2], -1).mean(-1)]).similarity[0, 1]
        rows.append({"point": name, "tensor": tensor, "cka": round(float(cka), 5)})
    return rows


def _activations(path: Path, names: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """The named intermediate tensors of an ONNX model on ``images`` (made graph outputs for the run)."""
    import onnx

    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in outputs)
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(names, {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)})
    return dict(zip(names, values, strict=True))


# the ONNX Runtime CPU kernels a quantizable layer becomes, fp32 (plain, fused, NCHWc) and INT8 (QDQ-fused)
LAYER_KERNELS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "QLinearConv", "QGemm", "QLinearMatMul",
                           "MatMulIntegerToFloat"})  # fmt: skip


def kernel_times(fp32: Path, int8: Path, images: np.ndarray, runs: int = 20) -> list[tuple[float, float]] | None:
    """Per quantizable layer in forward order, the median ONNX Runtime CPU kernel time (µs, its
    profiler, ``runs`` calls on ``images``) in the fp32 and the all-INT8 model: where INT8 pays
    and where its kernel is slower than the fp32 one (on x86, the depthwise convolutions of small
    students). The sessions run each graph as deployed (all optimizations, so the NCHWc fp32
    kernels), which renames nodes; the layers' kernels are matched by position, and None says
    the counts differ (a fusion merged layers)."""
    import json

    import onnxruntime as ort

    def profile(path: Path, folder: str) -> list[float]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling, options.profile_file_prefix = True, str(Path(folder) / path.stem)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)}
        for _ in range(3 + runs):
            session.run(None, feed)
        times: dict[str, list[float]] = {}
        for event in json.loads(Path(session.end_profiling()).read_text()):
            args = event.get("args", {})
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and args.get("op_name") in LAYER_KERNELS:
                times.setdefault(event["name"], []).append(event["dur"])
        return [float(np.median(t[3:])) for t in times.values()]  # first-run order is forward order; the warm-up calls left out

    with tempfile.TemporaryDirectory() as tmp:
        a, b = profile(Path(fp32), tmp), profile(Path(int8), tmp)
    count = len(quantizable_layers(fp32))
    return list(zip(a, b, strict=True)) if len(a) == len(b) == count else None


def ranking(report: dict[str, Any]) -> list[str]:
    """Layers from the most to the least sensitive: lowest SQNR when quantized alone first."""
    return [r["layer"] for r in sorted(report["layers"], key=lambda r: (r["int8_alone"]["sqnr_db"], -r["float_alone"]["sqnr_db"]))]


def fallback(fp32: Path, out: Path, calibration: Callable[[], Iterator[np.ndarray]], probe: Probe | DetectionProbe, report: dict[str, Any],
             budget: float,
             target: str = "cpu", max_float: int | None = None, ranges: Path | None = None,
             forced: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write ``out``: INT8 with the fewest most-sensitive layers kept float such that the probe's
    metric (top-1, or AP50 for a detector) drops by at most ``budget`` points from fp32. The
    ``forced`` layers (``--int8-float``) are float in every try and count towards ``max_float``.

    Raises:
        UserError: a negative budget, or one not met with ``max_float`` layers in float (says how close it came).
    """
    if budget < 0:
        raise UserError(f"--int8-budget {budget}: the allowed drop (top-1, or AP50 for a detector) is in points, >= 0 (e.g. 0.5)")
    forced = forced or []
    order = forced + [layer for layer in ranking(report) if layer not in forced]
    limit = len(order) if max_float is None else min(max_float, len(order))
    if len(forced) > limit:
        raise UserError(f"--int8-max-float {max_float} is below the {len(forced)} layers --int8-float keeps float")
    metric = report["metric"]
    name, reference, tried = _METRIC_NAMES[metric], report[f"fp32_{metric}"], []
    for count in range(len(forced), limit + 1):
        kept = order[:count]
        score = probe.score(quantize_qdq(fp32, out, calibration(), target=target, keep_float=kept, ranges=ranges))
        tried.append({"float_layers": count, metric: score[metric]})
        if reference - score[metric] <= budget:
            return {"budget": budget, "float_layers": kept, f"fp32_{metric}": reference, **score, "tried": tried}
    out.unlink(missing_ok=True)
    best = max(tried, key=lambda t: t[metric])
    raise UserError(f"--int8-budget {budget}: not met with up to {limit} layers in float; the best was {name} {best[metric]:.2f} "
                    f"({reference - best[metric]:.2f} points below fp32 {reference:.2f}) with {best['float_layers']} float layers; "
                    "allow more float layers (--int8-max-float), a larger budget, or quantization-aware training")  # fmt: skip


_METRIC_NAMES = {"top1": "top-1", "AP50": "AP50"}


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def sensitivity_markdown(report: dict[str, Any], fallen: dict[str, Any] | None = None) -> str:
    metric, full = report["metric"], report["full_int8"]
    name = _METRIC_NAMES[metric]
    agree = "agreement %" if metric == "top1" else "AP50 vs fp32 detections"
    lines = [f"# INT8 sensitivity ({report['target']}, {report['images']} images)", "",
             f"fp32 {name} {report[f'fp32_{metric}']:.2f}; all layers INT8: {name} {full[metric]:.2f}, {agree} {_f(full['agreement'], 1)}, "
             f"{'logit' if metric == 'top1' else 'score'} SQNR {full['sqnr_db']:.1f} dB.", "",
             f"| # | layer | op | INT8 alone: {agree} | SQNR dB | {name} | float alone: {agree} | SQNR dB | {name} |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    timed = bool(report.get("kernel_batch"))
    if timed:
        lines[-2:] = [lines[-2] + " fp32 kernel µs | INT8 kernel µs |", lines[-1] + "---|---|"]
    for r in report["layers"]:
        a, f = r["int8_alone"], r["float_alone"]
        times = f" {r['fp32_us']} | {r['int8_us']} |" if timed else ""
        lines.append(f"| {r['index']} | {r['layer']} | {r['op']} | {_f(a['agreement'], 1)} | {a['sqnr_db']:.1f} | {a[metric]:.2f} | "
                     f"{_f(f['agreement'], 1)} | {f['sqnr_db']:.1f} | {f[metric]:.2f} |{times}")  # fmt: skip
    if timed:
        lines += ["", kernel_summary(report)]
    if report.get("hint_cka"):
        lines += ["", "CKA between fp32 and all-INT8 activations at the hint points (1 = the same representation):", "",
                  "| point | CKA |", "|---|---|", *(f"| {r['point']} | {r['cka']:.4f} |" for r in report["hint_cka"])]  # fmt: skip
    if fallen is not None:
        lines += ["", f"Float fallback for a {fallen['budget']}-point {name} budget: {len(fallen['float_layers'])} layers kept float "
                      f"({', '.join(fallen['float_layers']) or 'none'}), {name} {fallen[metric]:.2f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def kernel_summary(report: dict[str, Any]) -> str:
    """One sentence on where INT8 pays, from the per-layer kernel times."""
    rows = report["layers"]
    fp32, int8 = sum(r["fp32_us"] for r in rows), sum(r["int8_us"] for r in rows)
    slower = sorted((r for r in rows if r["int8_us"] > r["fp32_us"]), key=lambda r: r["fp32_us"] - r["int8_us"])
    worst = ", ".join(f"{r['layer']} {r['int8_us'] / max(r['fp32_us'], 1e-9):.1f}x" for r in slower[:3])
    return (
        f"ONNX Runtime CPU kernel time of the layers at batch {report['kernel_batch']}: fp32 {fp32:.0f} µs, all INT8 {int8:.0f} µs "
        f"({int8 / fp32:.2f}x); {len(slower)} of {len(rows)} layers run slower in INT8"
        + (f" (the most time lost: {worst})." if slower else ".")
    )


def plot_sensitivity(report: dict[str, Any]) -> bytes:
    """Logit (a detector: score) SQNR per layer in forward order: that layer alone in INT8, and that layer alone kept float."""
    import io

    from matplotlib.figure import Figure

    rows = report["layers"]
    fig = Figure(figsize=(max(6, 0.35 * len(rows)), 3.8))
    ax = fig.subplots()
    x = [r["index"] for r in rows]
    ax.plot(x, [min(r["int8_alone"]["sqnr_db"], 80) for r in rows], marker="o", label="only this layer INT8")
    ax.plot(x, [min(r["float_alone"]["sqnr_db"], 80) for r in rows], marker="s", label="only this layer float")
    ax.axhline(min(report["full_int8"]["sqnr_db"], 80), color="grey", ls="--", label="all layers INT8")
    output = "logit" if report.get("metric", "top1") == "top1" else "score"
    ax.set(
        xlabel="quantizable layer (forward order)", ylabel=f"{output} SQNR vs fp32 (dB, capped at 80)", title="INT8 sensitivity per layer"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def analyse(fp32: Path, path: Path, calibration: Callable[[], Iterator[np.ndarray]], probe: Probe | DetectionProbe,
            budget: float | None, max_float: int | None, target: str = "cpu",
            points: list[str] | None = None, forced: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The sensitivity sweep next to ``path`` (``<stem>.sensitivity.json`` / ``.md`` / ``.png``), the
    CKA at the hint ``points`` (module paths) of the all-INT8 model, and with a ``budget`` the
    fallback model written over ``path`` with the ONNX Runtime latency (batch 8) of fp32, all-INT8
    and the fallback beside each other."""
    from compressor.io import atomic_write, atomic_write_json, atomic_write_text

    from ..profile.latency import measure_latency

    with tempfile.TemporaryDirectory() as tmp:
        ranges = Path(tmp) / "ranges.json"  # calibrated once for the sweep and the fallback
        report = sensitivity(fp32, calibration, probe, target, ranges)
        report["hint_cka"] = hint_cka(fp32, path, points or [], probe.images)
        if target == "cpu":
            times = kernel_times(fp32, path, probe.images[:8])
            report["kernel_batch"] = len(probe.images[:8]) if times else None
            for row, (a, b) in zip(report["layers"], times or [], strict=False):
                row.update(fp32_us=round(a, 1), int8_us=round(b, 1))
        fallen = None
        if budget is not None:
            full = Path(tmp) / "full.onnx"
            full.write_bytes(path.read_bytes())  # the all-INT8 model, for the latency comparison
            fallen = fallback(fp32, path, calibration, probe, report, budget, target, max_float, ranges, forced)
            if target == "tensorrt" and fallen["float_layers"]:  # TensorRT runs them in FP16: the file says so, and is scored so
                fp16_islands(path, fallen["float_layers"])
                fallen.update(probe.score(path), float_precision="fp16")
            shape = tuple(probe.images.shape[1:])
            fallen["latency_ms_batch8"] = {name: round(measure_latency(OrtRuntime(p), shape, 8, 3, 20)["p50_ms"], 3)
                                           for name, p in (("fp32", fp32), ("int8", full), ("fallback", path))}  # fmt: skip
        report["fallback"] = fallen
    atomic_write_json(report_path(path, ".json"), report)
    atomic_write_text(report_path(path, ".md"), sensitivity_markdown(report, fallen))
    atomic_write(report_path(path, ".png"), lambda f: f.write(plot_sensitivity(report)))
    return report


def report_path(int8: Path, suffix: str) -> Path:
    """``student.int8.onnx`` -> ``student.int8.sensitivity<suffix>``."""
    return int8.with_name(int8.name.removesuffix(".onnx") + ".sensitivity" + suffix)
