"""``compressor run``: the whole pipeline from one YAML file."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "run teacher -> hints -> distill -> export -> profile from one YAML (unchanged stages are skipped)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipeline import STAGES

    p.add_argument("config", metavar="PIPELINE_YAML", help="pipeline config (example: compressor/pipeline/demo.yaml)")
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and every later one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import load_pipeline_config, run_pipeline

    config = load_pipeline_config(args.config, args.set)
    paths = run_pipeline(config, from_stage=args.from_stage, progress=not args.quiet)
    print(f"run folder: {config.run_dir}")
    if "report" in paths:
        print(f"report: {paths['report']}")
    return 0
