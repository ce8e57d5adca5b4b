"""``compressor ablate-hints``: the clustered hint plan against the simple rules, over seeds."""

from __future__ import annotations

import argparse

from ..checkpoint import TRUST_FLAG
from .refs import REF_HELP, folder, parse_seeds

NAME = "ablate-hints"
HELP = "distil one pair with the clustered hints and with stage-end, uniform, forward, reverse and random ones, over seeds"

# flag -> dotted config key
FLAGS = {
    "teacher": "teacher.checkpoint",
    "arch": "teacher.arch",
    "student": "distill.student",
    "data": "data.train",
    "method": "distill.loss.method",
    "epochs": "distill.recipe.epochs",
    "k": "hints.k",
    "samples": "hints.samples",
    "metric": "hints.metric",
    "draws": "random_draws",
    "seeds": "seeds",
    "device": "device",
}


# with --cross: flag -> dotted key of the cross-distillation config
CROSS_FLAGS = {
    "teacher": "teacher.checkpoint",
    "arch": "teacher.arch",
    "student": "student.arch",
    "method": "hints.method",
    "epochs": "student.epochs",
    "k": "hints.k",
    "samples": "hints.samples",
    "metric": "hints.metric",
    "device": "device",
}
PLAN_FLAGS = {"seeds": "seeds", "plans": "plans", "draws": "random_draws"}


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _plan_file(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--plan-file takes NAME=PATH (e.g. mine=plans/mine.json), got {text!r}")
    return name.strip(), path.strip()


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..hints.rules import RULES

    p.add_argument("config", nargs="?", metavar="YAML", help="ablation config (sections as compressor run's, plus plans, random_draws, "
                                                             "plan_files, vanilla); flags and --set override it")  # fmt: skip
    p.add_argument("--cross", metavar="TASK_OR_YAML",
                   help="ablate cross distillation's hints instead: detection or recognition (the shipped examples) or a "
                        "cross-distill YAML; --set then sets its keys")  # fmt: skip
    p.add_argument("--teacher", metavar="CKPT", help="a trained teacher (else --arch is trained first with teacher.recipe)")
    p.add_argument("--arch", help=f"teacher architecture: {REF_HELP}")
    p.add_argument("--student", metavar="ARCH", help=f"student architecture: {REF_HELP}")
    p.add_argument("--data", metavar="SPEC", help="training data (default synthetic), e.g. digits, cifar100:PATH")
    p.add_argument("--method", help="a method with hint terms, e.g. at+kd, fitnet+kd (default at+kd)")
    p.add_argument("--plans", type=_names, metavar="P1,P2,...", help=f"hint rules (default all: {', '.join(RULES)})")
    p.add_argument("--draws", type=int, metavar="N", help="draws of the random rule (default 3)")
    p.add_argument("--plan-file", type=_plan_file, action="append", default=[], metavar="NAME=PATH",
                   help="one more plan: a plan.json or a JSON list of 1-based teacher points")  # fmt: skip
    p.add_argument("--seeds", type=parse_seeds, metavar="S1,S2,...", help="seeds of every plan (default 0,1,2)")
    p.add_argument("--epochs", type=int, help="distillation epochs of every cell")
    p.add_argument("--k", type=int, help="hints per plan (the student's stage count by default: 3 for CIFAR ResNets)")
    p.add_argument("--samples", type=int, help="images the clustering compares (default 10000)")
    p.add_argument("--metric", help="clustering similarity: cka, cka-rbf or rcca")
    p.add_argument("--no-vanilla", action="store_true", help="leave out the student trained alone")
    p.add_argument("--device")
    p.add_argument("--out", type=folder, help="run folder (default runs/ablate-hints); finished cells in it are kept, never redone")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config value, e.g. distill.recipe.lr=0.05")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of a teacher checkpoint you trust")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..pipeline.ablation import ablation_markdown, load_ablation_config, run_ablation

    if args.cross:
        return _run_cross(args)

    flags = {key: getattr(args, name) for name, key in FLAGS.items()}
    flags["plans"] = args.plans
    flags["plan_files"] = {n: str(Path(f).resolve()) for n, f in args.plan_file} or None  # flags: against the working directory
    if args.no_vanilla:
        flags["vanilla"] = False
    if args.trust_checkpoint:
        flags["teacher.trusted"] = True
    if args.out:
        out = Path(args.out).resolve()
        flags.update({"out": str(out.parent), "name": out.name})
    defaults = {"distill.loss.method": "at+kd", "teacher.arch": None if args.teacher else "resnet20", "distill.student": "resnet8"}
    given = {k: v for k, v in flags.items() if v is not None}
    config = load_ablation_config(args.config, {**(defaults if args.config is None else {}), **given}, args.set)
    report = run_ablation(config, progress=not args.quiet)
    print(ablation_markdown(report))
    print(f"table: {config.run_dir / 'table.md'} (also table.json, ablation.png)")
    return 0


def _run_cross(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import load_config
    from ..crossdistill import CrossConfig
    from ..crossdistill.ablation import CrossAblationConfig, run_cross_ablation
    from ..crossdistill.config import EXAMPLES, PATH_KEYS, REF_KEYS
    from ..errors import UserError
    from ..pipeline.ablation import ablation_markdown

    if args.config or args.data:
        raise UserError("--cross takes its data and settings from the cross-distill config (data.root or data.builtin); "
                        "leave out the YAML argument and --data, and set its keys with --set")  # fmt: skip
    path = EXAMPLES / f"{args.cross}.example.yaml" if args.cross in ("detection", "recognition") else Path(args.cross)
    flags = {key: getattr(args, name) for name, key in CROSS_FLAGS.items() if getattr(args, name) is not None}
    cross = load_config(CrossConfig, path, flags, args.set, PATH_KEYS, "cross-distillation config", REF_KEYS)
    plan_set = {key: getattr(args, name) for name, key in PLAN_FLAGS.items() if getattr(args, name) is not None}
    plan_set["plan_files"] = {n: str(Path(f).resolve()) for n, f in args.plan_file}
    plan_set["vanilla"] = not args.no_vanilla
    out = Path(args.out or "runs/ablate-hints-cross").resolve()
    try:
        config = CrossAblationConfig(**plan_set, out=str(out.parent), name=out.name, cross=cross)
    except ValueError as e:
        raise UserError(f"ablate-hints --cross: {e}") from None
    config.check_plan_files()
    report = run_cross_ablation(config, progress=not args.quiet)
    print(ablation_markdown(report))
    print(f"table: {config.run_dir / 'table.md'} (also table.json, ablation.png)")
    return 0
