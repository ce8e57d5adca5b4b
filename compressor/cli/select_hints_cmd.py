"""``compressor select-hints``: choose hint layers of a teacher by clustering its sub-blocks."""

from __future__ import annotations

import argparse

from ..checkpoint import TRUST_FLAG
from ..device import default_device
from ..hints import METRICS, HintConfig, select_hints
from ..hints.kmeans import POSITIONS
from .refs import KWARGS_HELP, POINTS_HELP, REF_HELP, finite_float, folder, parse_globs, parse_kwargs

NAME = "select-hints"
HELP = "select hint layers of a teacher by clustering its sub-blocks (PURSUhInT)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = HintConfig()
    p.add_argument("--teacher", required=True, metavar="CKPT", help="teacher checkpoint")
    p.add_argument("--arch", help=f"teacher architecture (inferred when left out): {REF_HELP}")
    p.add_argument("--arch-kwargs", type=parse_kwargs, metavar="K=V,...", help=KWARGS_HELP)
    p.add_argument("--points", type=parse_globs, metavar="GLOB,...", help=POINTS_HELP)
    p.add_argument(
        "--data", required=True, metavar="SPEC", help="synthetic | cifar10:PATH | cifar100:PATH | imagefolder:PATH | images:PATH"
    )
    p.add_argument("--samples", type=int, default=d.samples, help=f"N samples for the representations (default {d.samples})")
    p.add_argument("--k", type=int, default=d.k, help=f"number of hints (default {d.k})")
    p.add_argument("--metric", default=d.metric, help=f"{' | '.join(METRICS.names())} (default {d.metric})")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each sample's representation before the metric")
    p.add_argument("--position", default=d.position, help=f"hint per cluster: {' | '.join(POSITIONS)} (default {d.position})")
    p.add_argument("--centroid", choices=["matrix", "kernel"], help="k-means centroid: mean of the members' N x C matrices "
                   "(matrix, default for cka and rcca) or of their kernel-space objects (kernel; the only one for cka-rbf)")  # fmt: skip
    p.add_argument("--preact", action="store_true", help="pre-activation features (before the sub-block's last ReLU)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=d.workers, help="data loader worker processes")
    p.add_argument("--seed", type=int, default=d.seed, help="which samples are drawn")
    p.add_argument("--rbf-bandwidth", type=finite_float, default=1.0, help="cka-rbf: sigma as a fraction of the median distance")
    p.add_argument("--rbf-max-samples", type=int, help="cka-rbf: cap on N (its kernels are N x N)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=folder, required=True, help="output folder for plan.json and similarity.png")
    p.add_argument("--overwrite", action="store_true", help="replace a plan already in OUT (default: refuse, nothing is changed)")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of a checkpoint you trust")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    options = {}
    if args.metric == "cka-rbf":
        options = {"bandwidth": args.rbf_bandwidth, "max_samples": args.rbf_max_samples}
    settings = {"samples": args.samples, "k": args.k, "metric": args.metric, "normalize": args.normalize, "position": args.position,
                "preact": args.preact, "batch_size": args.batch_size, "workers": args.workers, "seed": args.seed, "centroid": args.centroid,
                "metric_options": options}  # fmt: skip
    config = HintConfig.model_construct(**settings)  # argparse typed them; select_hints' check() names what is wrong, flag by flag
    plan = select_hints(
        args.teacher,
        args.data,
        args.out,
        config,
        arch=args.arch,
        kwargs=args.arch_kwargs,
        points=args.points,
        overwrite=args.overwrite,
        trusted=args.trust_checkpoint,
        device=args.device or default_device(),
        progress=not args.quiet,
    )
    t = plan.timings
    print(f"{plan.teacher_arch}: {len(plan.candidates)} candidates, k={plan.k}, metric={plan.metric}")
    print(f"  selected hints  {plan.hints}  ({', '.join(plan.hint_names)})")
    print(f"  baseline hints  {plan.baseline_hints}")
    print(f"  step 1 {t['step1_representations_s']:.2f} s, step 2 {t['step2_clustering_s']:.2f} s")
    for note in plan.notes:
        print(f"  note: {note}")
    print(f"wrote {args.out}/plan.json and {args.out}/similarity.png")
    return 0
