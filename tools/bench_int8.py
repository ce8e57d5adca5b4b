"""INT8 without the cliff, on one run: fp32 vs post-training INT8 (PTQ) vs PTQ with float fallback
at a 0.5-point budget vs quantization-aware distillation (QAD), on the CPU, built-in data only.

    python tools/bench_int8.py [--task classification|detection] [--out DIR] [--student MobileNetV2] [--data digits]
                               [--teacher-epochs N] [--epochs 30] [--qat-epochs 6]

Classification (the default):

1. A resnet20 teacher is trained on built-in data (default scikit-learn's bundled handwritten digits,
   real images; ``--data`` any spec) with plain CE, then the student
   (default RepDistiller's CIFAR MobileNetV2, the architecture family PTQ is known to hurt) is
   distilled from it (KD + CE) in fp32.
2. ``compressor export --int8`` (static PTQ, ONNX Runtime's U8S8 Q/DQ, min-max calibration on 512
   training images) and ``--sensitivity --int8-budget 0.5`` (the fewest most sensitive layers in float).
3. QAD: the same distillation continued for ``--qat-epochs`` through the Q/DQ graph
   (``quant.qat: true``, starting from the fp32 student), its INT8 ONNX written from the learned steps.
4. All four models on ONNX Runtime (CPU): top-1 on the same held-out images, number of float
   layers, and latency (p50 of the interleaved rounds, batch 1 and 32), as a ratio to fp32.

Detection (``--task detection``): the same four models for a YOLOv3-MobileNetV2-s licence-plate
detector cross-distilled from an HEVC-domain teacher (``compressor cross-distill --example detection``
with ``quant.qat: true``, 800 training and 400 test scenes), PTQ and the fallback calibrated on the run's labelled images
(``--calib yolo:RUN/data``), all scored by AP50 on ONNX Runtime (the box decoding in float).

Prints a Markdown table (the README's come from one run of each), the sweep's per-layer kernel-time line (where
INT8 pays on this CPU) and writes ``DIR/int8_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from compressor.deploy.export.sensitivity import kernel_summary
from compressor.deploy.profile.accuracy import accuracy, predict
from compressor.deploy.runtime.ort_runtime import OrtRuntime

from compressor import api
from compressor.data import open_dataset

DATA = "digits"  # scikit-learn's handwritten digits: real images, bundled (the README table's run)


def latency_ms(paths: dict[str, Path], shape: tuple[int, ...], batch: int, rounds: int = 7, calls: int = 20) -> dict[str, float]:
    """Median per-call latency of each model, timed in interleaved rounds (a shared machine's drift hits all alike)."""
    runtimes = {k: OrtRuntime(p) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    samples: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, rt in runtimes.items():
            for _ in range(3):  # settle after the other sessions ran
                rt(x)
            time.sleep(0.05)
            start = time.perf_counter()
            for _ in range(calls):
                rt(x)
            samples[k].append(1000 * (time.perf_counter() - start) / calls)
    return {k: statistics.median(v) for k, v in samples.items()}


@dataclass
class Bench:
    """What one task's run gives the table: the four ONNX models and how each is scored."""

    title: str
    metric: str  # top-1 %, or AP50
    models: dict[str, Path]
    scores: dict[str, float]
    floats: dict[str, int | str]
    shape: tuple[int, ...]
    parity: str


def classifier(args: argparse.Namespace, out: Path) -> Bench:
    """Steps 1-3 for a classifier distilled with ``compressor distill``."""
    common = {"optim.schedule": "cosine", "data.batch_size": 64, "train.tensorboard": False}
    teacher = out / "teacher" / "student.pt"
    if not teacher.exists():
        api.distill(student="resnet20", data=args.data, out=out / "teacher", method="ce", epochs=args.teacher_epochs or 30,
                    settings={**common, "optim.lr": 0.1}, progress=True)  # fmt: skip
    student = out / "student" / "student.pt"
    if not student.exists():
        api.distill(student=args.student, data=args.data, out=out / "student", teacher=teacher, method="kd", epochs=args.epochs or 30,
                    settings={**common, "optim.lr": 0.05}, progress=True)  # fmt: skip
    exported, fallback = _ptq_and_fallback(student, out, args.data)
    qat = {"student.checkpoint": str(student), "quant.qat": True, "quant.epochs": args.qat_epochs or 6}
    qad = api.distill(student=args.student, data=args.data, out=out / "qad", teacher=teacher, method="kd", overwrite=True, progress=True,
                      settings={**common, **qat})  # fmt: skip
    models = _models(exported, fallback, out / "qad" / "export" / "student.int8.onnx")
    held_out = open_dataset(args.data, "test")
    top1 = {k: accuracy(*predict(OrtRuntime(p), held_out, limit=1000))["top1"] for k, p in models.items()}
    parity, sem = qad["int8"]["parity"], qad["int8"]["parity"]["semantics"]
    text = (f"QAD parity with ONNX Runtime: Q/DQ semantics layer by layer: {sem['differing_pct']}% of quantized values a step apart, "
            f"float ops within {sem['float_max_rel_error']}; integer kernels: {parity['top1_agreement']}% top-1 agreement, "
            f"max {parity['deployed_max_error_steps']} logit steps")  # fmt: skip
    return Bench(f"{args.student} on {args.data} ({len(held_out)} held-out images)", "top-1 %", models, top1, _floats(fallback),
                 tuple(held_out[0][0].shape), text)  # fmt: skip


def detector(args: argparse.Namespace, out: Path) -> Bench:
    """Steps 1-3 for a detector: cross distillation of the built-in licence plates (a YOLOv3-DarkNet53-s
    teacher on HEVC images, a YOLOv3-MobileNetV2-s student on pixels) with ``quant.qat: true``, so
    the one run leaves the float student and its QAD INT8 model; PTQ and the fallback come from the
    float student, calibrated and scored (AP50) on the run's own labelled images."""
    from compressor.deploy.export.sensitivity import make_probe

    from compressor.cli import main as cli
    from compressor.crossdistill.data import MEAN, STD
    from compressor.detection.data import DetectionFolder

    run = out / "cross"
    if not (run / "report.json").exists():
        sets = ["data.train=800", "data.test=400", f"teacher.epochs={args.teacher_epochs or 15}", f"student.epochs={args.epochs or 40}",
                "vanilla=false", "quant.qat=true", f"quant.epochs={args.qat_epochs or 6}"]  # fmt: skip
        code = cli(["cross-distill", "--example", "detection", "--out", str(run), *sum((["--set", s] for s in sets), [])])
        if code:
            raise SystemExit(code)
    report = json.loads((run / "report.json").read_text())
    exported, fallback = _ptq_and_fallback(run / "cross_student.pt", out, f"yolo:{run / 'data'}")
    models = _models(exported, fallback, run / "export" / "cross_student.int8.onnx")
    held_out = DetectionFolder(run / "data", "test", (96, 128), MEAN, STD)
    count = min(1000, len(held_out))
    probe = make_probe(models["fp32"], np.stack([held_out[i][0].numpy() for i in range(count)]), [held_out.truth(i) for i in range(count)])
    ap50 = {k: probe.score(p)["AP50"] for k, p in models.items()}
    parity, sem = report["int8"]["parity"], report["int8"]["parity"]["semantics"]
    text = (f"QAD parity with ONNX Runtime: Q/DQ semantics layer by layer: {sem['differing_pct']}% of quantized values a step apart, "
            f"float ops within {sem['float_max_rel_error']}; integer kernels: AP50 {parity['detection_agreement']} against the "
            f"PyTorch graph's detections, max score difference {parity['deployed_max_score_error']}")  # fmt: skip
    return Bench(f"YOLOv3-MobileNetV2-s cross-distilled on the built-in plates ({count} held-out images)", "AP50", models, ap50,
                 _floats(fallback), (3, 96, 128), text)  # fmt: skip


def _ptq_and_fallback(student: Path, out: Path, calib: str) -> tuple[Path, Path]:
    """Step 2: PTQ, and PTQ with the float fallback for a 0.5-point budget."""
    exported, fallback = out / "ptq", out / "fallback"
    api.export(student, exported, stem="student", overwrite=True, int8=True, calib=calib, calib_samples=512, eval_samples=1000)
    api.export(student, fallback, stem="student", overwrite=True, int8=True, calib=calib, calib_samples=512, eval_samples=1000,
               sensitivity=True, int8_budget=0.5)  # fmt: skip
    return exported, fallback


def _models(exported: Path, fallback: Path, qad: Path) -> dict[str, Path]:
    return {"fp32": exported / "student.onnx", "PTQ": exported / "student.int8.onnx", "PTQ + fallback @0.5": fallback / "student.int8.onnx",
            "QAD": qad}  # fmt: skip


def _floats(fallback: Path) -> dict[str, int | str]:
    fallen = json.loads((fallback / "student.int8.json").read_text())["int8"]["fallback"]
    return {"fp32": "all", "PTQ": 0, "PTQ + fallback @0.5": len(fallen["float_layers"]), "QAD": 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("classification", "detection"), default="classification")
    p.add_argument("--out", default=None, help="default runs/bench_int8 (classification), runs/bench_int8_detection")
    p.add_argument("--student", default="MobileNetV2", help="classification: the student architecture")
    p.add_argument("--teacher-epochs", type=int, help="default 30 (classification), 15 (detection)")
    p.add_argument("--epochs", type=int, help="the float student's epochs; default 30 (classification), 40 (detection)")
    p.add_argument("--qat-epochs", type=int, help="default 6")
    p.add_argument("--data", default=DATA, help="classification: a dataset spec")
    args = p.parse_args(argv)
    out = Path(args.out or ("runs/bench_int8" if args.task == "classification" else "runs/bench_int8_detection"))
    started = time.perf_counter()
    bench = (classifier if args.task == "classification" else detector)(args, out)
    lat1, lat32 = latency_ms(bench.models, bench.shape, 1), latency_ms(bench.models, bench.shape, 32)
    rows = [{"model": k, "score": round(bench.scores[k], 2), "drop": round(bench.scores["fp32"] - bench.scores[k], 2),
             "float_layers": bench.floats[k], "p50_ms_b1": round(lat1[k], 3), "ratio_b1": round(lat1[k] / lat1["fp32"], 2),
             "p50_ms_b32": round(lat32[k], 3), "ratio_b32": round(lat32[k] / lat32["fp32"], 2)} for k in bench.models]  # fmt: skip
    print(f"\n{bench.title}, ONNX Runtime CPU, {time.perf_counter() - started:.0f} s in all")
    print(f"| model | {bench.metric} | drop vs fp32 | float layers | p50 ms (b1) | vs fp32 | p50 ms (b32) | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['score']:.2f} | {r['drop']:.2f} | {r['float_layers']} | {r['p50_ms_b1']:.3f} | {r['ratio_b1']:.2f}x | "
              f"{r['p50_ms_b32']:.3f} | {r['ratio_b32']:.2f}x |")  # fmt: skip
    print(bench.parity)
    sweep = json.loads((out / "fallback" / "student.int8.sensitivity.json").read_text())
    kernels = kernel_summary(sweep) if sweep.get("kernel_batch") else None
    if kernels:
        print(kernels)
    summary = {
        "task": args.task,
        "title": bench.title,
        "metric": bench.metric,
        "rows": rows,
        "qad_parity": bench.parity,
        "kernels": kernels,
    }
    (out / "int8_bench.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
