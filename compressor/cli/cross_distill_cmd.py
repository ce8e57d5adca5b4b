"""``compressor cross-distill``: HEVC-domain teacher -> pixel-domain student (thesis 000 ch. 5).

One YAML config (see ``compressor/crossdistill/detection.example.yaml`` and
``recognition.example.yaml``) trains the teacher on HEVC images, selects its hints, trains the
vanilla and the cross-distilled student on the paired pixel images, and reports AP50 /
accuracy of all three side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..crossdistill.config import EXAMPLES, PATH_KEYS, REF_KEYS
from .refs import folder, parse_seeds

NAME = "cross-distill"
HELP = "cross distillation: HEVC compressed-domain teacher -> pixel student (YOLOv3 detection or recognition)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"YAML config (examples: {EXAMPLES}/detection.example.yaml, recognition.example.yaml)")
    p.add_argument("--example", choices=("detection", "recognition"), help="start from a shipped example config instead")
    p.add_argument("--out", type=folder, help="output folder (overrides the config's out)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config value, e.g. hints.method=cc")
    p.add_argument("--seeds", type=parse_seeds, metavar="S1,S2,...", help="run once per seed into OUT/seed-<s>/ (teacher trained once); "
                                                                         "OUT/seeds.md has every network's mean ± std")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue a stopped run in OUT: finished networks are kept, the interrupted "
                                                         "one continues from its last checkpoint")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..crossdistill import CrossConfig, run_cross_distill
    from ..crossdistill.run import run_cross_distill_seeds
    from ..errors import UserError

    if bool(args.config) == bool(args.example):
        raise UserError("give exactly one of --config FILE or --example detection|recognition")
    path = args.config or EXAMPLES / f"{args.example}.example.yaml"
    config = load_config(CrossConfig, path, {"out": args.out}, args.set, PATH_KEYS, "cross-distillation config", REF_KEYS)
    if args.seeds:
        summary = run_cross_distill_seeds(config, args.seeds, progress=not args.quiet)
        for name, row in summary["results"].items():
            print(f"{name:16s} {summary['metric']} {row['mean']:6.2f} ± {row['std']:.2f} over seeds {args.seeds}")
        print(f"wrote {Path(config.out) / 'seeds.md'} (also seeds.json; each seed's report in seed-<s>/)")
        return 0
    report = run_cross_distill(config, progress=not args.quiet, resume=args.resume)
    metric = report["metric"]
    for name, row in report["results"].items():
        print(f"{name:16s} {row['arch']:22s} {row['domain']:6s} {metric} {row[metric]:6.2f}")
    print(f"report: {Path(config.out) / 'report.html'} (also report.md, report.json)")
    return 0
