"""Benchmark hint selection (PURSUhInT steps 1 and 2) on resnet110, beside the paper's CPU figures.

    python tools/bench_hints.py [--samples 10000] [--naive-samples 2000] [--batch-size 256]

Step 1: collecting the N x C representations of all 54 sub-blocks, against a plain forward pass
over the same data in the same process (target: <= 1.15x). The data is cut into chunks and the two
alternate chunk by chunk, so that a burst of load on a shared machine hits both alike; the ratio of
the totals and the median of the per-chunk ratios are printed. Step 2: similarity + k-means for
R^2_CCA and linear CKA (target: <= 5 s at N = 10,000), against a straightforward implementation
that builds the N x N Gram / projection matrix of every layer, as the formulas are written. The
straightforward one needs L x N^2 memory (54 x 800 MB at N = 10,000), so it runs at a smaller N
and its N^2 extrapolation is printed beside it, marked as such. The weights are random (the
timings do not depend on them); the inputs are the built-in synthetic CIFAR-size images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from compressor.models import create_model, discover_points
from torch.utils.data import DataLoader, Subset

from compressor.data import open_dataset
from compressor.hints import cluster_layers, collect_representations
from compressor.hints.kmeans import position_seeds, representative

PAPER = {"step1": 941.0, "rcca": 336.0, "cka": 4797.0}  # 001 Table 1, resnet110, seconds


@torch.inference_mode()
def plain_forward(model, data, batch_size):
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        model(batch[0])


def naive_kernels(reps, metric):
    """Per layer, the unit-norm N x N object the formulas talk about: H K H (CKA) or Q Q^T (CCA)."""
    out = []
    for x in reps:
        x = x.astype(np.float64) - x.mean(0)
        if metric == "cka":
            k = x @ x.T  # centred data gives a centred Gram matrix
        else:
            u, s, _ = np.linalg.svd(x, full_matrices=False)
            q = u[:, s > s.max() * 1e-5]
            k = q @ q.T
        out.append(k / np.linalg.norm(k))
    return out


def naive_step2(reps, metric, k=3):
    kernels = naive_kernels(reps, metric)
    num = len(kernels)
    sim = np.array([[float(np.sum(a * b)) for b in kernels] for a in kernels])
    flat = np.stack([kk.ravel() for kk in kernels])  # explicit kernel-space vectors
    centroids = flat[position_seeds(num, k)]
    labels = None
    while True:
        cos = flat @ centroids.T / np.linalg.norm(centroids, axis=1)
        new = np.argmin(1 - cos, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centroids = np.stack([flat[labels == j].mean(0) for j in range(k)])
    return sorted(int(representative(list(np.flatnonzero(labels == j)), "center", sim)) + 1 for j in range(k))


def timed(fn, *args, **kw):
    start = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--naive-samples", type=int, default=2_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=10, help="step 1 alternates plain and hooked passes over this many chunks")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = create_model("resnet110", num_classes=100).eval()
    data = open_dataset(f"synthetic:classes=100,train={args.samples}")
    start = time.perf_counter()
    found = discover_points(model, (32, 32))
    print(f"hint-point discovery on resnet110: {len(found.points)} points in {time.perf_counter() - start:.3f} s")
    print(f"resnet110, {len(model.hint_points())} candidates, N={len(data)}, batch {args.batch_size}, {torch.get_num_threads()} threads")

    warm = Subset(data, range(args.batch_size))
    plain_forward(model, warm, args.batch_size)
    collect_representations(model, warm, batch_size=args.batch_size, progress=False)
    t_plain, t_step1, ratios, parts = 0.0, 0.0, [], []
    for chunk in np.array_split(np.arange(len(data)), args.chunks):
        sub = Subset(data, chunk.tolist())
        dt_plain, _ = timed(plain_forward, model, sub, args.batch_size)
        dt_step1, rep = timed(collect_representations, model, sub, batch_size=args.batch_size, progress=False)
        t_plain, t_step1 = t_plain + dt_plain, t_step1 + dt_step1
        ratios.append(dt_step1 / dt_plain)
        parts.append(rep)
    reps = [np.concatenate(layer) for layer in zip(*parts, strict=True)]
    print(f"\nstep 1: representations of all sub-blocks ({args.chunks} interleaved chunks)")
    print(f"  plain forward pass          {t_plain:8.1f} s")
    print(f"  collect_representations     {t_step1:8.1f} s   ratio {t_step1 / t_plain:.3f}x (target <= 1.15x)")
    print(f"  per-chunk ratios            median {np.median(ratios):.3f}x, min {min(ratios):.3f}x, max {max(ratios):.3f}x")
    print(f"  paper (001 Table 1)         {PAPER['step1']:8.1f} s")

    print("\nstep 2: similarity + k-means (k=3)")
    n_small = min(args.naive_samples, args.samples)
    small = [r[:n_small] for r in reps]
    for metric in ("rcca", "cka"):
        t_ours, result = timed(cluster_layers, reps, k=3, metric=metric)
        t_ours_small, small_result = timed(cluster_layers, small, k=3, metric=metric)
        t_naive, naive_hints = timed(naive_step2, small, metric)
        extrapolated = t_naive * (args.samples / n_small) ** 2
        print(f"  {metric:5s} ours N={args.samples:<6d}       {t_ours:8.2f} s   hints {result.hints}  (target <= 5 s)")
        print(f"  {metric:5s} ours N={n_small:<6d}       {t_ours_small:8.2f} s   hints {small_result.hints}")
        print(f"  {metric:5s} N x N Gram, N={n_small:<6d} {t_naive:8.2f} s   hints {naive_hints}  ({t_naive / t_ours_small:.0f}x slower)")
        gib = len(reps) * args.samples**2 * 8 / 2**30
        print(f"  {metric:5s} N x N Gram at N={args.samples} ~{extrapolated:8.0f} s   (N^2 extrapolation; needs {gib:.0f} GiB)")
        print(f"  {metric:5s} paper (001 Table 1)     {PAPER[metric]:8.0f} s   speed-up {PAPER[metric] / t_ours:.0f}x")


if __name__ == "__main__":
    main()
