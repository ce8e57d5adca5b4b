"""Averager student vs plain KD, from a normal and from an undistillable ("nasty") teacher.

    python tools/averager_study.py [--data synthetic:classes=10,train=2000,test=500,noise=60,mix=95] [--epochs 8] [--out DIR]

1. a normal teacher (resnet20, cross-entropy only);
2. an undistillable teacher: the same architecture trained by self-undermining KD against the
   normal one (``--method undermine``, Ma et al. 2021);
3. from each teacher, a resnet8 student by KD and by the averager (thesis 000 ch. 4), from the
   same seed; plus the student trained alone, for reference.
Prints one table of top-1 accuracies (the thesis' Tables 4.1 / 4.2 in miniature) and writes it
to OUT/table.md. Everything runs on the CPU in minutes with the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compressor.io import atomic_write_text
from compressor.train import distill, load_distill_config


def run(out: Path, student: str, method: str, data: str, epochs: int, teacher: Path | None = None, extra: list[str] = ()) -> dict:
    flags = {"student.arch": student, "loss.method": method, "data.train": data, "train.epochs": epochs, "out": str(out),
             "optim.lr": 0.05, "data.batch_size": 64, "teacher.checkpoint": str(teacher) if teacher else None,
             "teacher.arch": "resnet20" if teacher else None}  # fmt: skip
    config = load_distill_config(None, flags, ["optim.schedule=cosine", *extra])
    return distill(config, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic:classes=10,train=2000,test=500,noise=60,mix=95")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", default="runs/averager-study")
    p.add_argument("--omega", type=float, default=0.04, help="self-undermining weight (Ma et al.: 0.04 on CIFAR-10)")
    p.add_argument("--tau", type=float, default=4.0, help="self-undermining temperature")
    args = p.parse_args()
    out = Path(args.out)
    normal = run(out / "normal_teacher", "resnet20", "ce", args.data, args.epochs)
    nasty = run(out / "nasty_teacher", "resnet20", "undermine", args.data, args.epochs, Path(normal["weights"]),
                [f"loss.weights.undermine={args.omega}", f"loss.params.undermine.T={args.tau}"])  # fmt: skip
    alone = run(out / "student_alone", "resnet8", "ce", args.data, args.epochs)
    rows = [("(none: trained alone)", "-", alone["final"]["top1"], alone["final"]["top1"])]
    for name, teacher in (("normal", normal), ("undistillable", nasty)):
        kd = run(out / f"{name}_kd", "resnet8", "kd", args.data, args.epochs, Path(teacher["weights"]))
        avg = run(out / f"{name}_averager", "resnet8", "averager", args.data, args.epochs, Path(teacher["weights"]))
        rows.append((f"{name} resnet20", f"{teacher['final']['top1']:.2f}", kd["final"]["top1"], avg["final"]["top1"]))
    table = ["| teacher | teacher top-1 | resnet8 by KD | resnet8 by averager |", "|---|---:|---:|---:|"]
    table += [f"| {t} | {acc} | {kd:.2f} | {avg:.2f} |" for t, acc, kd, avg in rows]
    text = f"Data {args.data}, {args.epochs} epochs each; undermining omega {args.omega}, tau {args.tau}.\n\n" + "\n".join(table) + "\n"
    print(text)
    atomic_write_text(out / "table.md", text)


if __name__ == "__main__":
    main()
