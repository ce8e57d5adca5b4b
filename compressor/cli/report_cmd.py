"""``compressor report``: one report.html (+ report.md) telling a whole run."""

from __future__ import annotations

import argparse

from .refs import finite_float

NAME = "report"
HELP = "write RUN_DIR/report.html and report.md: summary, teacher, hints, training curves, export, profile, provenance"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of compressor run, demo or cross-distill (e.g. runs/demo)")
    p.add_argument("--budget-ms", type=finite_float, metavar="MS", help="recommend the most accurate artifact within this batch-1 latency "
                                                              "(default: the run's report.budget_ms, else the Pareto set)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a report.html / report.md this tool did not write")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import read_yaml
    from ..errors import UserError
    from ..report import write_run_report

    budget = args.budget_ms
    if budget is not None and not budget > 0:
        raise UserError(f"--budget-ms must be a positive number of milliseconds, got {budget}")
    config = Path(args.run_dir) / "config.yaml"
    if budget is None and config.is_file():
        section = read_yaml(config).get("report")
        budget = section.get("budget_ms") if isinstance(section, dict) else None
    files = write_run_report(args.run_dir, overwrite=args.overwrite, budget_ms=budget)
    print(f"report: {files['report.html']}")
    return 0
