"""``compressor demo``: the whole pipeline on built-in data, no downloads."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .refs import folder

NAME = "demo"
HELP = "train a teacher, select hints, distill, export (fp32 + INT8) and profile, all on built-in data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=folder, default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--data", default=None, choices=["synthetic", "digits"], help="built-in data: generated (default) or sklearn's digits")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value of the demo config")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import DEMO_CONFIG, load_pipeline_config, run_pipeline

    out = Path(args.out).resolve()
    extra = {"out": str(out.parent), "name": out.name}
    if args.data == "digits":
        extra["data.train"] = "digits"
    config = load_pipeline_config(DEMO_CONFIG, args.set, extra)
    start = time.perf_counter()
    paths = run_pipeline(config, progress=not args.quiet)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; run folder: {config.run_dir}")
    print(f"report: {paths['report']}")
    return 0
