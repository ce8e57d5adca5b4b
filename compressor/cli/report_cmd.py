"""``compressor report``: one report.html (+ report.md) telling a whole run."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "write RUN_DIR/report.html and report.md: summary, teacher, hints, training curves, export, profile, provenance"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of compressor run, demo or cross-distill (e.g. runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace a report.html / report.md this tool did not write")


def run(args: argparse.Namespace) -> int:
    from ..report import write_run_report

    files = write_run_report(args.run_dir, overwrite=args.overwrite)
    print(f"report: {files['report.html']}")
    return 0
