"""Repeated runs: the same distillation with several seeds, per-seed results and mean +- std.

The papers report means of 3-5 runs; ``distill_seeds`` runs ``config`` once per seed into
``OUT/seed-<s>/`` (each an ordinary run: resumable, its own student artifact) and writes
``OUT/seeds.json`` and ``OUT/seeds.md`` with each seed's final and best top-1 and their mean and
sample standard deviation.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from ..outdir import claim
from .config import DistillConfig
from .engine import distill

SCHEMA = "edge-compressor/seeds"


def distill_seeds(
    config: DistillConfig, seeds: list[int], resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run ``config`` once per seed; returns ``{'runs': [...], 'final_top1': {mean, std}, 'best_top1': {...}}``.

    Raises:
        UserError: fewer than two distinct seeds, or what a single run raises.
    """
    if len(set(seeds)) != len(seeds) or len(seeds) < 2:
        raise UserError(f"--seeds {','.join(map(str, seeds))}: give two or more different seeds (the papers use 3-5)")
    out = Path(config.out)
    runs = []
    with claim(out, ["seeds.json", "seeds.md"], "distill --seeds", resume=resume, overwrite=overwrite, resumable=True):
        for seed in seeds:
            one = config.model_copy(deep=True)
            one.train.seed, one.out = seed, str(out / f"seed-{seed}")
            summary = distill(one, resume=resume and (out / f"seed-{seed}").exists(), progress=progress, overwrite=overwrite)
            runs.append({"seed": seed, "final_top1": summary["final"]["top1"], "best_top1": summary["best_top1"],
                         "weights": summary.get("weights")})  # fmt: skip
        return write_seeds(out, config.loss.method, config.student.arch, config.data.train, runs)


def write_seeds(out: Path, method: str, student: str, data: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``out/seeds.json`` and ``out/seeds.md`` from per-seed ``{seed, final_top1, best_top1, weights}``."""
    report = {"schema": SCHEMA, "version": 1, "method": method, "student": student, "data": data, "runs": runs,
              "final_top1": mean_std([r["final_top1"] for r in runs]), "best_top1": mean_std([r["best_top1"] for r in runs])}  # fmt: skip
    atomic_write_json(out / "seeds.json", report)
    atomic_write_text(out / "seeds.md", seeds_markdown(report))
    return report


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (n - 1), as the papers' "mean +- std over runs"."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values), "n": len(values)}


def seeds_markdown(report: dict[str, Any]) -> str:
    f, b = report["final_top1"], report["best_top1"]
    lines = [f"# {report['student']} with {report['method']} on {report['data']}: {f['n']} seeds", "",
             "| seed | final top-1 (%) | best top-1 (%) |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['seed']} | {r['final_top1']:.2f} | {r['best_top1']:.2f} |" for r in report["runs"]]
    lines += [f"| mean ± std | {f['mean']:.2f} ± {f['std']:.2f} | {b['mean']:.2f} ± {b['std']:.2f} |", ""]
    return "\n".join(lines)
