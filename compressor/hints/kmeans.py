"""k-means over layers in kernel space, from the L x L Gram matrix alone (001 §3.2, eq. 6-7).

Layer a is a unit vector phi_a in kernel space (``similarity.py``); a centroid is the mean of
its members' phi (eq. 7) and the distance of a layer to it is 1 - the metric between them,
i.e. 1 - cos(phi_a, mu_j) (eq. 6 with D = 1 - CKA or 1 - R^2_CCA). In terms of the Gram matrix G
and the member indicator m_j: cos = (G m_j)_a / sqrt(m_j^T G m_j). Seeds are the layers
farthest apart by position (first, centre, last for k = 3, evenly spread for other k);
assignment and update alternate until the labels stop changing.
"""

from __future__ import annotations

import numpy as np


def position_seeds(num_layers: int, k: int) -> list[int]:
    """0-based seed layers spread evenly by position: k=3 -> first, centre, last.

    Fractional positions round down, so "centre" of an even count is the lower middle, the
    same rule as the ``center`` hint position.
    """
    if k == 1:
        return [(num_layers - 1) // 2]
    return [i * (num_layers - 1) // (k - 1) for i in range(k)]


def centroid_cosines(gram: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(L, k) cosine between every layer and every centroid; ``members`` is (L, k) of 0/1."""
    dots = gram @ members  # (L, k): sum over members of <phi_a, phi_b>
    norms = np.sqrt(np.maximum(np.einsum("ak,ab,bk->k", members, gram, members), 0.0))
    return dots / np.where(norms > 0, norms, 1.0)


def kernel_kmeans(gram: np.ndarray, k: int, seeds: list[int] | None = None, max_iter: int = 300) -> tuple[np.ndarray, int]:
    """Cluster L layers into k groups.

    Args:
        gram: (L, L) inner products of unit-norm kernel-space objects (diagonal 1).
        k: number of clusters, 1 <= k <= L.
        seeds: 0-based seed layers; default ``position_seeds``.
        max_iter: safety bound; k-means on L points converges far sooner.

    Returns:
        ``(labels (L,), iterations)`` with labels numbered by first appearance along the network.

    An empty cluster (possible only when layers are exact duplicates of a seed) is re-seeded
    with the layer farthest from its own centroid, the usual k-means fallback.
    """
    num = gram.shape[0]
    if not 1 <= k <= num:
        raise ValueError(f"k={k} must be between 1 and the number of layers ({num})")
    seeds = position_seeds(num, k) if seeds is None else list(seeds)
    members = np.zeros((num, k))
    members[seeds, np.arange(k)] = 1.0
    labels = None
    for iteration in range(1, max_iter + 1):
        dist = 1.0 - centroid_cosines(gram, members)
        new = np.argmin(dist, axis=1)  # ties go to the lower cluster index: deterministic
        for j in range(k):
            if not (new == j).any():
                own = dist[np.arange(num), new]
                own[[a for a in range(num) if (new == new[a]).sum() == 1]] = -np.inf  # never empty another cluster
                new[int(np.argmax(own))] = j
        if labels is not None and np.array_equal(new, labels):
            return _relabel(labels), iteration
        labels = new
        members = np.eye(k)[labels]
    return _relabel(labels), max_iter


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number clusters 0, 1, ... in order of their first layer."""
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in labels])


def _center(ordered: list[int], similarity: np.ndarray) -> int:
    return ordered[(len(ordered) - 1) // 2]


def _last(ordered: list[int], similarity: np.ndarray) -> int:
    return ordered[-1]


def _medoid(ordered: list[int], similarity: np.ndarray) -> int:
    return ordered[int(np.argmax(similarity[np.ix_(ordered, ordered)].sum(axis=1)))]


# How a cluster is represented by one hint (0-based layer indices in forward order):
# center = the middle member by position (lower middle for even sizes), the paper's choice
# (001 Table 2); last = the deepest member; medoid = highest total similarity to the others.
POSITIONS = {"center": _center, "last": _last, "medoid": _medoid}


def representative(members: list[int], position: str, similarity: np.ndarray) -> int:
    """The hint chosen from one cluster (0-based layer indices in, 0-based out)."""
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; known: {', '.join(POSITIONS)}")
    return POSITIONS[position](sorted(members), similarity)
