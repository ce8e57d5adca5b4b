"""Step 2 of PURSUhInT: similarity between layers, k-means over them, one hint per cluster."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .kmeans import POSITIONS, kernel_kmeans, position_seeds, representative
from .matrix_kmeans import matrix_kmeans
from .similarity import METRICS

CENTROIDS = ("matrix", "kernel")


@dataclass
class Clustering:
    """Result of ``cluster_layers``.

    Attributes:
        similarity: (L, L) the metric between layers (distance = 1 - similarity).
        labels: (L,) cluster of each layer, numbered along the network.
        hints: selected layers, 1-based, ascending.
        seeds: seed layers, 1-based.
        iterations: k-means iterations until the labels stopped changing.
        seconds: wall time of similarity + clustering.
        notes: fallbacks taken (subsampling, constant layers).
    """

    similarity: np.ndarray
    labels: np.ndarray
    hints: list[int]
    seeds: list[int]
    iterations: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def cluster_layers(
    reps: Sequence[np.ndarray],
    k: int = 3,
    metric: str = "cka",
    position: str = "center",
    normalize: bool = False,
    centroid: str | None = None,
    **metric_options,
) -> Clustering:
    """Cluster L layer representations into k groups and pick one hint per group.

    Args:
        reps: one (N, C_i) matrix per candidate layer, in forward order (spatial means).
        k: number of hints (3 on CIFAR, 4 on ImageNet in the paper).
        metric: ``cka`` (linear), ``cka-rbf`` or ``rcca`` (mean squared CCA).
        position: ``center`` (paper), ``last`` or ``medoid``.
        normalize: per-sample L2 normalisation before the metric (see ``similarity.prepare``).
        centroid: ``matrix`` (default for ``cka`` and ``rcca``): a cluster's centroid is the mean of its
            members' zero-padded N x C matrices and the distance is 1 - the metric to it (eq. 6-7 read
            in representation space, ``matrix_kmeans``); ``kernel``: the mean of the unit-norm
            kernel-space objects (``kmeans``; the only one for ``cka-rbf``).
        **metric_options: e.g. ``bandwidth``, ``max_samples`` for ``cka-rbf``.

    Raises:
        ValueError: k outside 1..L, unknown metric or position, degenerate data (see the
            metric functions). Fallbacks: a layer with constant features is unlike all others;
            an empty cluster is re-seeded with the farthest layer.
    """
    if metric not in METRICS:
        raise ValueError(METRICS.unknown_message(metric))
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; known: {', '.join(POSITIONS)}")
    if not 1 <= k <= len(reps):
        raise ValueError(f"k={k} hints asked for but the teacher has only {len(reps)} candidate layers; use k <= {len(reps)}")
    centroid = centroid or ("kernel" if metric == "cka-rbf" else "matrix")
    if centroid not in CENTROIDS or (centroid == "matrix" and metric == "cka-rbf"):
        raise ValueError(f"centroid {centroid!r}: {' or '.join(CENTROIDS)} (cka-rbf: kernel only)")
    start = time.perf_counter()
    sim = METRICS.get(metric)(reps, normalize=normalize, **metric_options)
    if centroid == "matrix":
        labels, iterations = matrix_kmeans(reps, k, metric, normalize)
    else:
        labels, iterations = kernel_kmeans(sim.gram, k)
    hints = sorted(int(representative(list(np.flatnonzero(labels == j)), position, sim.similarity)) + 1 for j in range(k))
    seconds = time.perf_counter() - start
    seeds = [s + 1 for s in position_seeds(len(reps), k)]
    return Clustering(sim.similarity, labels, hints, seeds, iterations, seconds, sim.notes)
