"""Training throughput of the distillation engine vs the straightforward reference loop.

    python tools/bench_distill.py [--rounds 12] [--warmup 3] [--batch 64] [--bf16]

Pair: resnet32x4 -> resnet8x4, AT + KD (+ CE), batch 64, 32x32 inputs, 100 classes, SGD.
(a) the engine (``compressor.train.engine.setup`` + ``train_step``) in several configurations;
(b) the straightforward loop of the reference CIFAR distillation code: eager fp32, teacher
forward under no_grad, student forward, the same loss terms, backward, SGD step;
(c) CE-only training of the same student, straightforward.
All read the same pre-made batches (data loading is left out of every figure). Every variant is
built and warmed up first (compilation happens there and is reported separately); then the
variants are timed interleaved, one step of each per round, so that drift in a shared machine's
speed (hypervisor steal comes and goes within seconds here) affects all of them alike. Reported:
each variant's median step and its best step (the least disturbed one), each as images/s and as
a ratio to the reference loop's.
The first batch's loss of each engine configuration is compared with the reference loop's
from identical weights: within fp32 tolerance for the exact variants, within bf16 tolerance for
the approximate ones (the INT8 teacher, calibrated on the synthetic task's training images, and
bf16 autocast); the INT8 teacher's own check against fp32 is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F
from compressor.models import create_model

from compressor.data import open_dataset
from compressor.losses.at import attention_map
from compressor.train import load_distill_config
from compressor.train.engine import setup, train_step

TEACHER_HINTS, STUDENT_HINTS = [5, 10, 15], [1, 2, 3]
AT_WEIGHT, KD_T = 1000.0, 4.0
DATA = "synthetic:classes=100,train=512,test=256"
# torch.testing's default (rtol, atol) for float32 and bfloat16
FP32_TOL, BF16_TOL = (1.3e-6, 1e-5), (1.6e-2, 1e-5)


def batches(n: int, batch: int):
    """Batches of the synthetic task the engine variants are set up on (the INT8 teacher is
    calibrated on its training images, so the timed batches come from the same distribution)."""
    data = open_dataset(DATA)
    items = [data[i] for i in range(n * batch)]
    images, labels = torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items])
    return list(zip(images.split(batch), labels.split(batch), strict=True))


def reference_step(teacher, student, opt, x, y, distill: bool) -> float:
    """The reference loop body (RepDistiller's train_distill, AT + KD)."""
    if distill:
        with torch.no_grad():
            feat_t, logit_t = teacher.forward_features(x, TEACHER_HINTS)
    feat_s, logit_s = student.forward_features(x, STUDENT_HINTS)
    loss = F.cross_entropy(logit_s, y)
    if distill:
        kd = F.kl_div(F.log_softmax(logit_s / KD_T, 1), F.softmax(logit_t / KD_T, 1), reduction="batchmean") * KD_T**2
        at = sum(
            (attention_map(fs, 2) - attention_map(ft, 2)).pow(2).mean() for fs, ft in zip(feat_s.values(), feat_t.values(), strict=True)
        )
        loss = loss + kd + AT_WEIGHT * at
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def warm_up(step, data, warmup: int) -> tuple[float, float]:
    """Run the warm-up steps (compilation happens here); returns (first loss, seconds)."""
    start = time.perf_counter()
    first = step(*data[0])
    for x, y in data[1:warmup]:
        step(x, y)
    return first, time.perf_counter() - start


def reference(teacher, student_state, distill: bool):
    student = create_model("resnet8x4")
    student.load_state_dict(student_state)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return lambda x, y: reference_step(teacher, student, opt, x, y, distill)


def engine(teacher_path: Path, student_state, out: Path, **train):
    config = load_distill_config(
        None,
        {
            "teacher.checkpoint": str(teacher_path),
            "student.arch": "resnet8x4",
            "loss.method": "at+kd",
            "out": str(out),
            "data.train": DATA,
            "data.augment": False,
        },  # fmt: skip
        [
            f"loss.weights={{ce: 1.0, kd: 1.0, at: {AT_WEIGHT}}}",
            f"loss.params={{kd: {{T: {KD_T}}}, at: {{p: 2}}}}",
            "hints.teacher=[5,10,15]",
            "optim.lr=0.05",
            "optim.weight_decay=0.0005",
        ]
        + [f"train.{k}={v}" for k, v in train.items()],  # fmt: skip
    )
    s = setup(config)
    s.core.student.load_state_dict(student_state)
    check = s.teacher.int8_check
    notes = [check.summary()] if check else []

    def step(x, y):
        if config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return float(train_step(s, x, y, torch.arange(len(y)), False)["loss"])

    return step, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="measurement rounds (one step of every variant per round)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--bf16", action="store_true", help="also the bf16-autocast engine (slow without AMX / avx512_bf16)")
    args = ap.parse_args()
    # Every variant compiles its own model instances, which share the models' forward code: without
    # this, later variants would exceed dynamo's per-code cache and silently run eagerly.
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 512
    torch.manual_seed(0)
    data = batches(args.warmup, args.batch)
    teacher = create_model("resnet32x4").eval()
    student_state = create_model("resnet8x4").state_dict()
    print(f"resnet32x4 -> resnet8x4, AT+KD, batch {args.batch}, 32x32, {torch.get_num_threads()} threads; "
          f"{args.rounds} interleaved rounds of one step per variant after {args.warmup} warm-up steps")  # fmt: skip
    variants = {
        "engine: eager fp32 (defaults)": {},
        "engine: channels_last": {"channels_last": True},
        "engine: compiled teacher (frozen)": {"compile_teacher": True},
        "engine: compiled both + channels_last": {"compile_teacher": True, "compile_student": True, "channels_last": True},
    }
    variants.update({
        "engine: INT8 teacher (ONNX Runtime)": {"teacher_int8": True},
        "engine: INT8 teacher + channels_last": {"teacher_int8": True, "channels_last": True},
        "engine: INT8 teacher + compiled student + cl": {"teacher_int8": True, "compile_student": True, "channels_last": True},
    })  # fmt: skip
    if args.bf16:
        variants["engine: bf16 autocast"] = {"amp": "bf16"}
    approximate = {name for name, train in variants.items() if train.get("teacher_int8") or train.get("amp")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet32x4.pt"
        torch.save(teacher.state_dict(), path)
        steps = {"(b) reference loop, eager fp32": reference(teacher, student_state, True),
                 "(c) CE-only student, eager fp32": reference(teacher, student_state, False)}  # fmt: skip
        built, notes = dict.fromkeys(steps, 0.0), set()
        for name, train in variants.items():
            start = time.perf_counter()
            steps[name], found = engine(path, student_state, Path(tmp) / str(len(steps)), **train)
            built[name] = time.perf_counter() - start
            notes.update(found)
        first, warm = {}, {}
        for name, step in steps.items():
            first[name], warm[name] = warm_up(step, data, args.warmup)
        rates: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(args.rounds):
            x, y = data[r % len(data)]
            for name, step in steps.items():
                start = time.perf_counter()
                step(x, y)
                rates[name].append(args.batch / (time.perf_counter() - start))
    median = {name: statistics.median(r) for name, r in rates.items()}
    best = {name: max(r) for name, r in rates.items()}
    reference_name = "(b) reference loop, eager fp32"
    ref_loss = first[reference_name]
    print(f"\n{'variant':44s} {'median':>13s} {'best':>13s} {'first loss':>11s} {'rel diff':>8s} {'setup+warm-up s':>15s}")
    for name in steps:
        rel = abs(first[name] - ref_loss) / abs(ref_loss)
        rtol, atol = BF16_TOL if name in approximate else FP32_TOL
        within = abs(first[name] - ref_loss) <= atol + rtol * abs(ref_loss)
        loss = "" if name.startswith("(c)") else f"{first[name]:11.6f}"
        diff = "" if name.startswith("(c)") else f"{rel:8.1e}" + ("" if within else " (out of tolerance)")
        ready = built[name] + warm[name]
        print(f"{name:44s} {median[name]:5.1f} {median[name] / median[reference_name]:5.2f}x "
              f"{best[name]:5.1f} {best[name] / best[reference_name]:5.2f}x {loss:>11s} {diff:>8s} {ready:15.1f}")  # fmt: skip
    print("(images/s; ratios to the reference loop's median and best step; relative difference of the first batch's loss "
          f"from the reference loop's, checked against torch.testing's fp32 (rtol, atol) {FP32_TOL}, or its bf16 "
          f"{BF16_TOL} for the INT8 teacher and bf16 autocast)")  # fmt: skip
    for note in sorted(notes):
        print(note)
    print("\ntarget: engine >= 1.5x the reference loop, same first-batch loss (fp32 tolerance; bf16 tolerance with AMP)")


if __name__ == "__main__":
    main()
