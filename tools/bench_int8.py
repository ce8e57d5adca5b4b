"""INT8 without the cliff, on one run: fp32 vs post-training INT8 (PTQ) vs PTQ with float fallback
at a 0.5-point budget vs quantization-aware distillation (QAD), on the CPU, built-in data only.

    python tools/bench_int8.py [--out DIR] [--student MobileNetV2] [--data digits] [--epochs 30] [--qat-epochs 6]

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

Prints a Markdown table (the README's comes from one run of it) and writes ``DIR/int8_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench_int8")
    p.add_argument("--student", default="MobileNetV2")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--qat-epochs", type=int, default=6)
    p.add_argument("--data", default=DATA)
    args = p.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    common = {"optim.schedule": "cosine", "data.batch_size": 64, "train.tensorboard": False}
    teacher = out / "teacher" / "student.pt"
    if not teacher.exists():
        api.distill(student="resnet20", data=args.data, out=out / "teacher", method="ce", epochs=args.teacher_epochs,
                    settings={**common, "optim.lr": 0.1}, progress=True)  # fmt: skip
    student = out / "student" / "student.pt"
    if not student.exists():
        api.distill(student=args.student, data=args.data, out=out / "student", teacher=teacher, method="kd", epochs=args.epochs,
                    settings={**common, "optim.lr": 0.05}, progress=True)  # fmt: skip
    exported = out / "ptq"
    api.export(student, exported, stem="student", overwrite=True, int8=True, calib=args.data, calib_samples=512, eval_samples=1000)
    fallback = out / "fallback"
    api.export(student, fallback, stem="student", overwrite=True, int8=True, calib=args.data, calib_samples=512, eval_samples=1000,
               sensitivity=True, int8_budget=0.5)  # fmt: skip
    qat = {"student.checkpoint": str(student), "quant.qat": True, "quant.epochs": args.qat_epochs}
    qad = api.distill(student=args.student, data=args.data, out=out / "qad", teacher=teacher, method="kd", overwrite=True, progress=True,
                      settings={**common, **qat})  # fmt: skip
    models = {"fp32": exported / "student.onnx", "PTQ": exported / "student.int8.onnx",
              "PTQ + fallback @0.5": fallback / "student.int8.onnx", "QAD": out / "qad" / "export" / "student.int8.onnx"}  # fmt: skip
    held_out = open_dataset(args.data, "test")
    top1 = {k: accuracy(*predict(OrtRuntime(p), held_out, limit=1000))["top1"] for k, p in models.items()}
    fallen = json.loads((fallback / "student.int8.json").read_text())["int8"]["fallback"]
    floats = {"fp32": "all", "PTQ": 0, "PTQ + fallback @0.5": len(fallen["float_layers"]), "QAD": 0}
    shape = tuple(held_out[0][0].shape)
    lat1, lat32 = latency_ms(models, shape, 1), latency_ms(models, shape, 32)
    rows = [{"model": k, "top1": round(top1[k], 2), "drop": round(top1["fp32"] - top1[k], 2), "float_layers": floats[k],
             "p50_ms_b1": round(lat1[k], 3), "ratio_b1": round(lat1[k] / lat1["fp32"], 2),
             "p50_ms_b32": round(lat32[k], 3), "ratio_b32": round(lat32[k] / lat32["fp32"], 2)} for k in models]  # fmt: skip
    print(
        f"\n{args.student} on {args.data} ({len(held_out)} held-out images), ONNX Runtime CPU, {time.perf_counter() - started:.0f} s in all"
    )
    print("| model | top-1 % | drop vs fp32 | float layers | p50 ms (b1) | vs fp32 | p50 ms (b32) | vs fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['top1']:.2f} | {r['drop']:.2f} | {r['float_layers']} | {r['p50_ms_b1']:.3f} | {r['ratio_b1']:.2f}x | "
              f"{r['p50_ms_b32']:.3f} | {r['ratio_b32']:.2f}x |")  # fmt: skip
    parity = qad["int8"]["parity"]
    sem = parity["semantics"]
    print(f"QAD parity with ONNX Runtime: Q/DQ semantics layer by layer: {sem['differing_pct']}% of quantized values a step apart, "
          f"float ops within {sem['float_max_rel_error']}; integer kernels: {parity['top1_agreement']}% top-1 agreement, "
          f"max {parity['deployed_max_error_steps']} logit steps")  # fmt: skip
    (out / "int8_bench.json").write_text(
        json.dumps({"student": args.student, "data": args.data, "rows": rows, "qad_parity": parity}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
