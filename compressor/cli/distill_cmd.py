"""``compressor distill``: train a student against a frozen teacher (YAML config and/or flags)."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkpoint import TRUST_FLAG
from ..config import read_yaml
from ..errors import UserError
from ..train import distill, load_distill_config
from ..train.repeat import distill_seeds
from .refs import KWARGS_HELP, POINTS_HELP, REF_HELP, finite_float, folder, parse_globs, parse_kwargs, parse_seeds

NAME = "distill"
HELP = "distill a student from a teacher (KD, AT, FitNet, CRD, ... and combinations)"

# flag -> dotted config key
FLAGS = {
    "teacher": "teacher.checkpoint",
    "arch": "teacher.arch",
    "arch_kwargs": "teacher.kwargs",
    "teacher_points": "teacher.points",
    "student": "student.arch",
    "student_kwargs": "student.kwargs",
    "student_points": "student.points",
    "student_checkpoint": "student.checkpoint",
    "data": "data.train",
    "eval_data": "data.eval",
    "method": "loss.method",
    "hints": "hints.plan",
    "epochs": "train.epochs",
    "init_epochs": "train.init_epochs",
    "batch_size": "data.batch_size",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "amp": "train.amp",
    "device": "train.device",
    "seed": "train.seed",
    "workers": "data.workers",
    "out": "out",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see compressor/train/distill.example.yaml); flags and --set override it")
    p.add_argument("--teacher", metavar="CKPT", help="teacher checkpoint")
    p.add_argument("--arch", help=f"teacher architecture (inferred when left out): {REF_HELP}")
    p.add_argument("--arch-kwargs", type=parse_kwargs, metavar="K=V,...", help=f"teacher: {KWARGS_HELP}")
    p.add_argument("--teacher-points", type=parse_globs, metavar="GLOB,...", help=f"teacher: {POINTS_HELP}")
    p.add_argument("--student", metavar="ARCH", help=f"student architecture: {REF_HELP}")
    p.add_argument("--student-kwargs", type=parse_kwargs, metavar="K=V,...", help=f"student: {KWARGS_HELP}")
    p.add_argument("--student-points", type=parse_globs, metavar="GLOB,...", help=f"student: {POINTS_HELP}")
    p.add_argument("--student-checkpoint", metavar="CKPT", help="start the student from these weights")
    p.add_argument("--data", metavar="SPEC", help="training data: synthetic | cifar10:PATH | cifar100:PATH | imagefolder:PATH")
    p.add_argument("--eval-data", metavar="SPEC", help="evaluation data (default: the training spec's test split)")
    p.add_argument("--method", help="loss terms joined by +, e.g. at+kd, crd+at+kd, wsl+at")
    p.add_argument("--hints", metavar="PLAN", help="plan.json from select-hints (default: baseline stage ends)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--init-epochs", type=int, help="initialisation-stage epochs (fitnet two-stage, ab, fsp, ft, ekd)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=finite_float)
    p.add_argument("--optimizer", choices=["sgd", "adamw"])
    p.add_argument("--amp", choices=["off", "bf16", "fp16"])
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--out", type=folder, help="output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config value, e.g. optim.milestones=[30,60]")
    p.add_argument(
        "--seeds", type=parse_seeds, metavar="S1,S2,...", help="run once per seed into OUT/seed-<s>/; OUT/seeds.md has mean ± std"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (default: refuse, nothing is changed)")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of a teacher checkpoint you trust")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    flags = {key: getattr(args, name) for name, key in FLAGS.items()}
    if args.trust_checkpoint:
        flags["teacher.trusted"] = True
    config = load_distill_config(args.config, flags, args.set)
    if args.data is None and not any(s.startswith("data.train=") for s in args.set) and not _config_names_data(args.config):
        print("note: no --data given (nor data.train): training on the built-in synthetic data", file=sys.stderr)
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in OUT and --overwrite replaces it: give one of them")
    if args.seeds:
        report = distill_seeds(config, args.seeds, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
        f = report["final_top1"]
        print(f"student {config.student.arch}: top-1 {f['mean']:.2f} ± {f['std']:.2f} % over seeds {args.seeds}")
        print(f"wrote {config.out}/seeds.json and seeds.md")
        return 0
    summary = distill(config, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if "weights" in summary:
        final = summary["final"]
        print(f"student {config.student.arch}: top-1 {final['top1']:.2f}% (best {summary['best_top1']:.2f}%)")
        print(f"wrote {summary['weights']} and {summary['sidecar']}")
        if "int8" in summary:
            q, parity = summary["int8"], summary["int8"]["parity"]
            print(f"INT8 ({q['target']}, ONNX Runtime): top-1 {q['int8_top1']:.2f}% vs fp32 {q['fp32_top1']:.2f}% on {q['samples']} "
                  f"held-out images; parity with the training graph: {parity['top1_agreement']:.1f}% top-1 agreement"
                  f"{'' if parity['ok'] else ' (OUTSIDE the tolerance: see the sidecar)'}; wrote {q['file']}")  # fmt: skip
        if args.quiet:
            print(json.dumps({k: summary[k] for k in ("final", "best_top1", "ranks_identical")}))
    return 0


def _config_names_data(path: str | None) -> bool:
    if path is None:
        return False
    data = read_yaml(path).get("data")
    return isinstance(data, dict) and "train" in data
