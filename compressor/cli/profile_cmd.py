"""``compressor profile``: latency, memory, power and accuracy per backend, with reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..api import REPORT_FILES
from ..checkpoint import TRUST_FLAG
from ..errors import UserError
from ..outdir import claim
from .refs import KWARGS_HELP, REF_HELP, finite_float, folder, parse_kwargs

NAME = "profile"
HELP = "profile a model (and optionally its teacher) on every backend: latency, memory, power, accuracy"


def _batches(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes comma-separated integers, got {text!r}") from None


def _floats(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"give three comma-separated numbers (one per channel), got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    from compressor.deploy.profile.run import BACKENDS, ProfileOptions

    d = ProfileOptions()
    p.add_argument("model", metavar="MODEL", help="student.pt (+ student.json), a checkpoint, or any .onnx file")
    p.add_argument("--arch", help=f"architecture of MODEL when no sidecar says it: {REF_HELP}")
    p.add_argument("--arch-kwargs", type=parse_kwargs, metavar="K=V,...", help=KWARGS_HELP)
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="input size (needed by an ONNX file with dynamic H, W)")
    p.add_argument("--mean", type=_floats, help="per-channel mean of the input normalisation, e.g. 0.485,0.456,0.406 (default: sidecar's)")
    p.add_argument("--std", type=_floats, help="per-channel std of the input normalisation (default: sidecar's)")
    p.add_argument("--backend", default=",".join(d.backends), help=f"comma-separated: {', '.join(BACKENDS.names())}")
    p.add_argument("--batch", type=_batches, default=d.batches, help="batch sizes, e.g. 1,8,32")
    p.add_argument("--data", metavar="EVAL", help="evaluation data spec (test split); also calibrates INT8 (train split)")
    p.add_argument("--eval-samples", type=int, default=d.eval_samples)
    p.add_argument("--compare", metavar="TEACHER", help="teacher checkpoint: adds the papers' compression table")
    p.add_argument("--compare-arch", help=f"architecture of the teacher when no sidecar says it: {REF_HELP}")
    p.add_argument("--compare-kwargs", type=parse_kwargs, metavar="K=V,...", help=f"teacher: {KWARGS_HELP}")
    p.add_argument("--iters", type=int, default=d.iters, help="timed calls per batch size")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--e2e", nargs="?", const="", metavar="IMAGES",
                   help="also time end to end: image file -> decode -> resize -> normalise -> infer -> answer (NMS for detectors), "
                        "on an image or folder of images, or without IMAGES on PNGs of --data's test images")  # fmt: skip
    p.add_argument("--out", type=folder, help="report folder (default: a 'profile' folder beside MODEL)")
    p.add_argument("--overwrite", action="store_true", help="replace a report already in OUT (default: refuse, nothing is changed)")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of checkpoints you trust")
    p.add_argument("--call-timeout", type=finite_float, default=60.0, metavar="S",
                   help="stop an ONNX Runtime call running longer than S seconds: a graph that never ends (default 60)")  # fmt: skip
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from compressor.deploy.profile.report import write_reports
    from compressor.deploy.profile.run import ProfileOptions, profile_models

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not backends:
        raise UserError(f"--backend {args.backend!r} names no backend; give one or more of the --help list (default: all that apply)")
    if args.iters < 1 or args.warmup < 0 or args.eval_samples < 1 or args.call_timeout <= 0:
        raise UserError("--iters and --eval-samples must be >= 1, --warmup >= 0 and --call-timeout > 0")
    options = ProfileOptions(backends=backends, batches=args.batch, data=args.data,
                             eval_samples=args.eval_samples, warmup=args.warmup, iters=args.iters, progress=not args.quiet,
                             e2e=args.e2e, call_timeout=args.call_timeout)  # fmt: skip
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "profile"
    if args.input_size is not None and min(args.input_size) < 1:
        raise UserError(f"--input-size must be two positive integers, got {args.input_size}")
    if args.std is not None and min(args.std) <= 0:
        raise UserError(f"--std must be positive, got {args.std}")
    source = {
        "kwargs": args.arch_kwargs,
        "input_size": tuple(args.input_size) if args.input_size else None,
        "mean": args.mean,
        "std": args.std,
    }
    with claim(out, REPORT_FILES, "profile", overwrite=args.overwrite):
        report = profile_models(args.model, out, options, compare=args.compare, arch=args.arch, compare_arch=args.compare_arch,
                                trusted=args.trust_checkpoint, source=source, compare_kwargs=args.compare_kwargs)  # fmt: skip
        files = write_reports(report, out)
    for m in report["models"]:
        for b in m["backends"]:
            if b["status"] != "ok":
                print(f"{m['role']} {m['name']} {b['backend']}: skipped ({b['reason']})")
                continue
            lat = b["latency"][0]
            acc = f", top-1 {b['accuracy']['top1']:.2f}%" if b.get("accuracy") else ""
            print(f"{m['role']} {m['name']} {b['backend']}/{b['precision']}: batch {lat['batch']} p50 {lat['p50_ms']:.3f} ms{acc}")
    for row in report["comparison"]:
        print(f"{row['backend']}: compression {100 * row['compression_ratio']:.1f}%, speed-up {row['speedup']:.2f}x")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"report: {files['report.html']} (also report.md, report.json)")
    return 0
