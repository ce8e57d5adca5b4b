"""k-means over layers with centroids in representation space: the reading of PURSUhInT eq. 7
(Keser et al.) that takes the centroid of a cluster as the mean of its members' N x C matrices.

The paper defines the distance as D = 1 - R^2_CCA (or 1 - CKA) and the centroid as the mean of
the cluster's members (eq. 6-7) without saying in which space the mean is taken. Layers have
different widths C, so the mean of N x C matrices needs a common width: each centred matrix is
zero-padded to the widest layer's C (zero columns add nothing to a column space or to X^T Y, so a
layer compared with its own padded copy still scores 1). The distance of layer a to centroid
M_j is then the metric itself, 1 - R^2_CCA(X_a, M_j) with R^2_CCA = ||Q_a^T Q_M||_F^2 / min(rank_a,
rank_M), or 1 - linear CKA, exactly as eq. 6 writes it; unlike the kernel-space mean
(``kmeans.py``), the two-width minimum normalisation is kept. What stays a reading: averaging
raw matrices adds channel c of one layer to channel c of another, and channel order is arbitrary.
For R^2_CCA that matters less than it seems (the centroid's column space is what counts).
Seeds, tie-breaking and the empty-cluster fallback are those of ``kmeans.kernel_kmeans``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .kmeans import _relabel, position_seeds
from .similarity import RANK_RTOL, _cross_products, _whiteners, prepare


class CentroidSpace:
    """Every product the iterations need, from M = Z^T Z of the centred layers (computed once).

    With E_b the (C_b, C_max) zero-padding and a centroid M_S = (1/|S|) sum_{b in S} X_b E_b:
    X_a^T M_S = (1/|S|) sum_b M_ab E_b and M_S^T M_S = (1/|S|^2) sum_{b, c} E_b^T M_bc E_c, so no
    N-sized product is formed after M (as for the pairwise metrics, ``similarity.py``)."""

    def __init__(self, reps: Sequence[np.ndarray], normalize: bool):
        xs = prepare(reps, normalize)
        self.m, self.offsets = _cross_products(xs)
        self.width = max(x.shape[1] for x in xs)
        self.num = len(xs)
        self.whiteners, self.ranks = _whiteners(self.m, self.offsets)
        self.self_norms = [np.linalg.norm(self.block(a, a)) for a in range(self.num)]

    def block(self, a: int, b: int) -> np.ndarray:
        return self.m[self.offsets[a] : self.offsets[a + 1], self.offsets[b] : self.offsets[b + 1]]

    def _pad(self, block: np.ndarray, rows: bool, cols: bool) -> np.ndarray:
        return np.pad(block, ((0, self.width - block.shape[0] if rows else 0), (0, self.width - block.shape[1] if cols else 0)))

    def cross(self, a: int, members: np.ndarray) -> np.ndarray:
        """X_a^T M_S, (C_a, C_max)."""
        return sum(self._pad(self.block(a, b), False, True) for b in members) / len(members)

    def gram(self, members: np.ndarray) -> np.ndarray:
        """M_S^T M_S, (C_max, C_max)."""
        return sum(self._pad(self.block(b, c), True, True) for b in members for c in members) / len(members) ** 2

    def similarity(self, members: np.ndarray, metric: str) -> np.ndarray:
        """(L,) the metric between every layer and the centroid of ``members``."""
        mm = self.gram(members)
        crosses = [self.cross(a, members) for a in range(self.num)]
        if metric == "cka":
            norm = np.linalg.norm(mm)
            return np.array(
                [
                    np.linalg.norm(c) ** 2 / (na * norm) if na > 0 and norm > 0 else 0.0
                    for c, na in zip(crosses, self.self_norms, strict=True)
                ]
            )
        evals, evecs = np.linalg.eigh(mm)
        keep = evals > evals.max() * RANK_RTOL if evals.max() > 0 else np.zeros_like(evals, dtype=bool)
        w_m = (evecs[:, keep] / np.sqrt(evals[keep])).T  # whitener of the centroid: Q_M = M W_M^T
        rank_m = int(keep.sum())
        out = []
        for c, w_a, rank_a in zip(crosses, self.whiteners, self.ranks, strict=True):
            low = min(rank_a, rank_m)
            out.append(np.linalg.norm(w_a @ c @ w_m.T) ** 2 / low if low else 0.0)  # ||Q_a^T Q_M||_F^2 / min(p_a, p_M)
        return np.array(out)


def matrix_kmeans(reps: Sequence[np.ndarray], k: int, metric: str = "rcca", normalize: bool = False,
                  seeds: list[int] | None = None, max_iter: int = 300) -> tuple[np.ndarray, int]:  # fmt: skip
    """Cluster L layers into k groups with representation-space centroids.

    Args:
        reps: one (N, C_i) matrix per layer.
        k: number of clusters.
        metric: ``rcca`` or ``cka`` (linear).
        seeds: 0-based seed layers; default ``position_seeds``.

    Returns:
        ``(labels (L,), iterations)``, labels numbered by first appearance along the network.
    """
    if metric not in ("rcca", "cka"):
        raise ValueError(f"representation-space centroids are defined for rcca and cka, not {metric!r}")
    space = CentroidSpace(reps, normalize)
    num = space.num
    if not 1 <= k <= num:
        raise ValueError(f"k={k} must be between 1 and the number of layers ({num})")
    seeds = position_seeds(num, k) if seeds is None else list(seeds)
    groups = [np.array([s]) for s in seeds]
    labels = None
    for iteration in range(1, max_iter + 1):
        dist = 1.0 - np.stack([space.similarity(g, metric) for g in groups], axis=1)  # (L, k)
        new = np.argmin(dist, axis=1)
        for j in range(k):  # an empty cluster takes the layer farthest from its own centroid
            if not (new == j).any():
                own = dist[np.arange(num), new]
                own[[a for a in range(num) if (new == new[a]).sum() == 1]] = -np.inf
                new[int(np.argmax(own))] = j
        if labels is not None and np.array_equal(new, labels):
            return _relabel(labels), iteration
        labels = new
        groups = [np.flatnonzero(labels == j) for j in range(k)]
    return _relabel(labels), max_iter


def rcca_to(bases: list[np.ndarray], centroid: np.ndarray) -> np.ndarray:
    """(L,) R^2_CCA of every layer (given by an orthonormal basis) with one centroid matrix, directly on N-row
    matrices: the definition ``CentroidSpace`` computes without them (a reference for tests)."""
    u, sv, _ = np.linalg.svd(centroid, full_matrices=False)
    q = u[:, sv > sv[0] * np.sqrt(RANK_RTOL)] if sv.size and sv[0] > 0 else np.zeros((centroid.shape[0], 0))
    return np.array(
        [np.linalg.norm(b.T @ q) ** 2 / max(min(b.shape[1], q.shape[1]), 1) if b.shape[1] and q.shape[1] else 0.0 for b in bases]
    )


def cka_to(xs: list[np.ndarray], centroid: np.ndarray) -> np.ndarray:
    """(L,) linear CKA of every centred layer with one centroid matrix, directly (a reference for tests)."""
    mm = np.linalg.norm(centroid.T @ centroid)
    return np.array([np.linalg.norm(x.T @ centroid) ** 2 / (np.linalg.norm(x.T @ x) * mm) for x in xs])
