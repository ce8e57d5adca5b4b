"""``compressor export``: student -> ONNX (+ INT8 Q/DQ, FP16, TensorRT) with parity checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import TRUST_FLAG
from ..errors import UserError
from ..outdir import claim
from .refs import KWARGS_HELP, REF_HELP, finite_float, folder, parse_kwargs

NAME = "export"
HELP = "export a student to ONNX (+ INT8 Q/DQ, FP16, TensorRT), checked against PyTorch"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("student", metavar="STUDENT", help="student.pt (with its student.json), any supported checkpoint, or an .onnx file")
    p.add_argument("--arch", help=f"architecture, when the checkpoint has no sidecar and it cannot be inferred: {REF_HELP}")
    p.add_argument("--arch-kwargs", type=parse_kwargs, metavar="K=V,...", help=KWARGS_HELP)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="input size (an ONNX file with dynamic H, W needs it)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the base format (ONNX; TensorRT is built from it)")
    p.add_argument("--opset", type=int, default=17, help="17 through the stable exporter; >= 18 with --dynamo")
    p.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter (opset >= 18)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True, help="symbolic batch axis")
    p.add_argument("--int8", action="store_true", help="also a Q/DQ INT8 ONNX from static per-channel calibration")
    p.add_argument(
        "--calib",
        metavar="SPEC",
        help="calibration data for --int8 (its train split) and its accuracy check (test split); "
        "a detector: yolo:PATH, a labelled YOLO-layout folder (images/ and labels/, each with train/ and val/)",
    )
    p.add_argument("--calib-samples", type=int, default=512)
    p.add_argument("--sensitivity", action="store_true", help="with --int8 (or --trt-precision int8): each layer alone in INT8 and "
                   "alone kept float against fp32, and the CKA at the hint points (OUT/<stem>.int8.sensitivity.json/.md/.png)")  # fmt: skip
    p.add_argument("--int8-budget", type=finite_float, metavar="POINTS", help="with --int8 (or --trt-precision int8): keep the fewest, "
                   "most sensitive layers float (FP16 for TensorRT) until top-1 (a detector: AP50) drops by at most POINTS "
                   "on the held-out split")  # fmt: skip
    p.add_argument("--int8-max-float", type=int, metavar="N", help="with --int8-budget: at most N float layers (else exit 2)")
    p.add_argument("--int8-float", metavar="LAYERS", default="", help="with --int8: keep these layers float always (comma-separated "
                   "ONNX node names, as the sensitivity table lists them; FP16 for TensorRT); --int8-budget adds to them")  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="also an FP16 ONNX (TensorRT 11 builds FP16 only from one)")
    p.add_argument("--trt", action="store_true", help="also build a TensorRT engine for this GPU (needs TensorRT and a GPU)")
    p.add_argument("--trt-precision", default="fp16", choices=["fp32", "fp16", "int8"])
    p.add_argument(
        "--nms",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="detectors: ONNX NonMaxSuppression in the graph (outputs boxes, scores, selected); default: boxes + scores",
    )
    p.add_argument("--nms-iou", type=finite_float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--nms-score", type=finite_float, default=0.25, help="NMS score threshold (default 0.25)")
    p.add_argument("--nms-max", type=int, default=100, help="NMS boxes kept per class and image (default 100)")
    p.add_argument("--out", type=folder, help="output folder (default: an 'export' folder beside the student)")
    p.add_argument("--overwrite", action="store_true", help="replace an export already in OUT (default: refuse, nothing is changed)")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of a checkpoint you trust")


def run(args: argparse.Namespace) -> int:
    from compressor.deploy.artifact import load_artifact
    from compressor.deploy.export import ExportOptions, export_artifact, int8_summary

    if args.input_size is not None and min(args.input_size) < 1:
        raise UserError(f"--input-size must be two positive integers, got {args.input_size}")
    size = tuple(args.input_size) if args.input_size else None
    art = load_artifact(args.student, arch=args.arch, trusted=args.trust_checkpoint, kwargs=args.arch_kwargs, input_size=size)
    out = Path(args.out) if args.out else Path(args.student).resolve().parent / "export"
    options = ExportOptions(opset=args.opset, dynamic_batch=args.dynamic_batch, dynamo=args.dynamo, int8=args.int8, calib=args.calib,
                            calib_samples=args.calib_samples, fp16=args.fp16, trt=args.trt, trt_precision=args.trt_precision,
                            sensitivity=args.sensitivity, int8_budget=args.int8_budget, int8_max_float=args.int8_max_float,
                            int8_float=[n for n in args.int8_float.split(",") if n],
                            nms=args.nms, nms_iou=args.nms_iou, nms_score=args.nms_score, nms_max=args.nms_max)  # fmt: skip
    stem = Path(args.student).stem if art.meta.get("schema") else "model"
    try:
        produces = [f"{stem}.onnx", f"{stem}.*.onnx", f"{stem}.json", f"{stem}.*.json", f"{stem}.*.md", f"{stem}.*.png", "*.plan"]
        with claim(out, produces, "export", overwrite=args.overwrite):
            result = export_artifact(art, out, options, stem=stem)
    except ValueError as e:
        raise UserError(str(e)) from None
    p = result.info["parity"]
    if p is not None:
        print(f"{art.name}: ONNX parity OK on {p['shapes']} (max abs {p['max_abs']:.2e}, max rel {p['max_rel']:.2e})")
    for fmt in ("int8", "int8-trt"):
        if fmt not in result.info:
            continue
        q = result.info[fmt]
        print(f"INT8 ({q['target']}): {int8_summary(q)}")
        if q.get("float_layers_forced"):
            print(f"INT8 --int8-float: {len(q['float_layers_forced'])} layers float ({', '.join(q['float_layers_forced'])})")
        if q.get("fallback"):
            f = q["fallback"]
            layers = ", ".join(f["float_layers"]) or "none"
            print(f"INT8 fallback ({f['budget']} points): {len(f['float_layers'])} layers float ({layers}); "
                  f"ORT batch-8 p50 {f['latency_ms_batch8']} ms")  # fmt: skip
    for kind, path in result.files.items():
        print(f"wrote {kind}: {path}")
    return 0
