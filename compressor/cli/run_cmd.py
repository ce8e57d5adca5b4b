"""``compressor run``: the whole pipeline from one YAML file, or a paper's table from a recipe."""

from __future__ import annotations

import argparse

from .refs import parse_seeds

NAME = "run"
HELP = "run teacher -> hints -> distill -> export -> profile from one YAML (unchanged stages are skipped), or a table recipe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipeline import RECIPES, STAGES

    names = ", ".join(sorted(f.stem for f in RECIPES.glob("*.yaml")))
    p.add_argument("config", metavar="YAML", help=f"pipeline config (example: compressor/pipeline/demo.yaml) or a table recipe: a file, "
                                                  f"or the name of a built-in one ({names})")  # fmt: skip
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and every later one (pipelines)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (e.g. data=cifar100:PATH)")
    p.add_argument(
        "--seeds", type=parse_seeds, metavar="S1,S2,...", help="repeat every training with these seeds: mean ± std in the summary"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from ..config import read_yaml
    from ..pipeline import RECIPES, load_pipeline_config, run_pipeline
    from ..pipeline.table import is_table, load_table_config, run_table, table_markdown

    path = Path(args.config)
    # a recipe is named by a bare name: '../x' or '/abs/x' never reaches outside the recipe folder
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.config) and (RECIPES / f"{args.config}.yaml").is_file():
        path = RECIPES / f"{args.config}.yaml"
    if is_table(read_yaml(path)):
        config = load_table_config(path, args.set, args.seeds)
        report = run_table(config, progress=not args.quiet)
        print(table_markdown(report))
        print(f"table: {config.run_dir / 'table.md'} (also table.json)")
        return 0
    config = load_pipeline_config(path, args.set, {"seeds": args.seeds} if args.seeds else None)
    paths = run_pipeline(config, from_stage=args.from_stage, progress=not args.quiet)
    print(f"run folder: {config.run_dir}")
    if "report" in paths:
        print(f"report: {paths['report']}")
    return 0
