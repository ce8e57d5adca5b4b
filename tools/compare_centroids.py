"""How the two readings of PURSUhInT's k-means centroid (eq. 7) cluster a teacher's layers.

    python tools/compare_centroids.py [--arch resnet110 wrn_40_2] [--samples 2000] [--checkpoint-dir DIR]

``matrix``: the centroid is the mean of the members' zero-padded N x C matrices, the distance
1 - R^2_CCA (or 1 - CKA) to it, with the paper's min(p_a, p_b) normalisation. ``kernel``: the mean
of unit-norm kernel-space objects, whose R^2_CCA normalisation is the geometric mean sqrt(p_a p_b)
(a narrow and a wide layer score at most sqrt(min / max)). Prints, per architecture and metric, the
cluster of every layer and the chosen hints under both readings, and where they differ. Trained
teachers give the meaningful answer: pass RepDistiller checkpoints in --checkpoint-dir
(``<arch>.pth``); without them the weights are random and the synthetic images are used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from compressor.models import create_model

from compressor.checkpoint import load_checkpoint
from compressor.data import open_dataset
from compressor.hints import cluster_layers, collect_representations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resnet110", "wrn_40_2"])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--data", default=None, help="dataset spec (default: built-in synthetic CIFAR-size images)")
    ap.add_argument("--checkpoint-dir", type=Path, help="folder with <arch>.pth teachers")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = open_dataset(args.data or f"synthetic:classes=100,train={args.samples}")
    for arch in args.arch:
        ckpt = args.checkpoint_dir / f"{arch}.pth" if args.checkpoint_dir else None
        model = load_checkpoint(ckpt, arch=arch).model if ckpt and ckpt.exists() else create_model(arch).eval()
        reps = collect_representations(model, torch.utils.data.Subset(data, range(min(args.samples, len(data)))), progress=False)
        widths = sorted({r.shape[1] for r in reps})
        print(f"\n{arch}: {len(reps)} layers, widths {widths}, {'trained' if ckpt and ckpt.exists() else 'random weights'}")
        for metric in ("rcca", "cka"):
            runs = {c: cluster_layers(reps, k=args.k, metric=metric, centroid=c) for c in ("matrix", "kernel")}
            for centroid, result in runs.items():
                print(f"  {metric:4s} {centroid:6s} hints {result.hints}  clusters {''.join(str(v) for v in result.labels)}")
            moved = np.flatnonzero(runs["matrix"].labels != runs["kernel"].labels) + 1
            print(f"  {metric:4s} layers clustered differently: {moved.tolist() or 'none'}")


if __name__ == "__main__":
    main()
