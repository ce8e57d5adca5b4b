"""Layer similarity for hint selection (PURSUhInT 001 §3.2), as pure functions on N x C matrices.

Every metric returns two L x L matrices:

* ``similarity``: the paper's index between layers (linear CKA, RBF CKA or R^2_CCA), shown in
  the heatmap and written to the plan; distance = 1 - similarity.
* ``gram``: inner products <phi_a, phi_b> of unit-norm kernel-space objects phi_a, which is all
  k-means over layers needs (``kmeans.py``). For CKA, phi_a is the centred Gram matrix
  H K_a H scaled to unit Frobenius norm, so gram == similarity exactly. For R^2_CCA, phi_a is
  the projection onto the column space of the centred X_a scaled by 1/sqrt(rank_a); then
  gram_ab = ||Q_a^T Q_b||^2 / sqrt(p_a p_b), which equals R^2_CCA whenever the two layers have
  the same width and is the geometric instead of the minimum normalisation otherwise (the
  minimum admits no centroid, so it cannot drive k-means).

Linear CKA and R^2_CCA never build an N x N matrix: with Z = [X_1 ... X_L] (centred, N x sum C),
<H K_a H, H K_b H>_F = ||X_a^T X_b||_F^2 is a block of M = Z^T Z, and ||Q_a^T Q_b||_F^2 =
||W_a M_ab W_b^T||_F^2 with W_a = Lambda_a^{-1/2} U_a^T from the eigendecomposition of M_aa.
One (sum C)^2 x N product serves every pair. RBF CKA needs the N x N kernels and subsamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from compressor.models import Registry

# Eigenvalues of X^T X below this fraction of the largest are treated as zero (rank deficiency:
# dead ReLU channels, duplicated channels). In singular values that is a ratio of 1e-5.
RANK_RTOL = 1e-10


@dataclass
class Similarity:
    similarity: np.ndarray  # (L, L) the metric's index
    gram: np.ndarray  # (L, L) inner products of unit-norm kernel-space objects
    notes: list[str]


def prepare(reps: Sequence[np.ndarray], normalize: bool = False) -> list[np.ndarray]:
    """Validate N x C_i representations and centre their columns (float64).

    Args:
        reps: one (N, C_i) matrix per layer, same N.
        normalize: scale every sample's row to unit L2 norm first (the optional normalisation
            before clustering of 001 Table 2, "*"; the paper does not define it, this follows
            scikit-learn's ``normalize`` default, which is an assumption).

    Raises:
        ValueError: fewer than 2 layers or samples, mismatched N, non-finite values.
    """
    if len(reps) < 2:
        raise ValueError(f"need at least 2 layers to compare, got {len(reps)}")
    n = reps[0].shape[0]
    out = []
    for i, x in enumerate(reps, start=1):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"layer {i}: expected an (N={n}, C) matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(
                f"layer {i}: features contain NaN or inf; the teacher produced non-finite activations "
                f"(check the checkpoint and the input normalisation)"
            )
        if normalize:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1.0)
        out.append(x - x.mean(axis=0))
    if n < 2:
        raise ValueError(f"need at least 2 samples, got {n}")
    return out


def _cross_products(centred: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """M = Z^T Z for Z = [X_1 ... X_L], and the block offsets along its axes."""
    z = np.concatenate(centred, axis=1)
    offsets = np.cumsum([0] + [x.shape[1] for x in centred])
    return z.T @ z, offsets


def _block_frob2(m: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(L, L) matrix of squared Frobenius norms of the blocks of ``m`` cut at ``offsets``."""
    sq = m * m
    rows = np.add.reduceat(sq, offsets[:-1], axis=0)
    return np.add.reduceat(rows, offsets[:-1], axis=1)


def _constant_layers(norms: np.ndarray) -> list[int]:
    return [i for i, v in enumerate(norms) if not v > 0]


def _with_constant_fallback(sim: np.ndarray, dead: list[int], notes: list[str]) -> np.ndarray:
    """A layer whose features do not vary has no defined similarity. Fallback (documented in
    ``cluster_layers``): similarity 0 to every other layer, 1 to itself, and a note."""
    if dead:
        sim[dead, :] = 0.0
        sim[:, dead] = 0.0
        sim[dead, dead] = 1.0
        notes.append(
            f"layers {[d + 1 for d in dead]} have constant features over the samples (dead units?); "
            f"they are treated as unlike every other layer"
        )
    return sim


def linear_cka(reps: Sequence[np.ndarray], normalize: bool = False) -> Similarity:
    """Linear CKA for every pair of layers (Kornblith et al. 2019; 001 eq. 4-5).

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred X, Y, which equals
    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, L = Y Y^T.
    """
    centred = prepare(reps, normalize)
    m, offsets = _cross_products(centred)
    f2 = _block_frob2(m, offsets)
    norms = np.sqrt(np.diag(f2))
    notes: list[str] = []
    dead = _constant_layers(norms)
    safe = np.where(norms > 0, norms, 1.0)
    sim = _with_constant_fallback(f2 / np.outer(safe, safe), dead, notes)
    sim = np.clip((sim + sim.T) / 2, 0.0, 1.0)
    return Similarity(sim, sim.copy(), notes)


def _whiteners(m: np.ndarray, offsets: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Per layer W_a (rank_a x C_a) with W_a M_aa W_a^T = I, from M_aa's eigendecomposition."""
    ws, ranks = [], []
    for a in range(len(offsets) - 1):
        s = slice(offsets[a], offsets[a + 1])
        evals, evecs = np.linalg.eigh(m[s, s])
        keep = evals > evals.max() * RANK_RTOL if evals.max() > 0 else np.zeros_like(evals, dtype=bool)
        ws.append((evecs[:, keep] / np.sqrt(evals[keep])).T)
        ranks.append(int(keep.sum()))
    return ws, ranks


def rcca(reps: Sequence[np.ndarray], normalize: bool = False) -> Similarity:
    """Mean squared CCA, R^2_CCA(X, Y) = ||Q_Y^T Q_X||_F^2 / p1 (001 eq. 3; Yanai's GCD).

    Q are orthonormal bases of the centred columns; p1 = min of the two ranks (equal to the
    paper's min(C_X, C_Y) unless a layer is rank-deficient, where only its rank is defined).

    Raises:
        ValueError: N - 1 <= the widest layer's C: CCA then finds perfect correlations in any
            data (the centred samples span at most N - 1 dimensions).
    """
    centred = prepare(reps, normalize)
    n = centred[0].shape[0]
    widest = max(x.shape[1] for x in centred)
    if n - 1 <= widest:
        raise ValueError(
            f"R^2_CCA needs more samples than channels: N={n} but a layer has C={widest}; "
            f"use at least {widest + 2} samples (the paper uses 10,000) or the cka metric"
        )
    m, offsets = _cross_products(centred)
    ws, ranks = _whiteners(m, offsets)
    r_off = np.cumsum([0] + ranks)
    w = np.zeros((r_off[-1], offsets[-1]))
    for a, wa in enumerate(ws):
        w[r_off[a] : r_off[a + 1], offsets[a] : offsets[a + 1]] = wa
    f2 = _block_frob2(w @ m @ w.T, r_off)  # ||Q_a^T Q_b||_F^2, block by block
    r = np.array(ranks, dtype=np.float64)
    notes: list[str] = []
    dead = [a for a, k in enumerate(ranks) if k == 0]
    safe = np.where(r > 0, r, 1.0)
    sim = _with_constant_fallback(f2 / np.minimum.outer(safe, safe), dead, notes)
    gram = _with_constant_fallback(f2 / np.sqrt(np.outer(safe, safe)), dead, [])
    sim = np.clip((sim + sim.T) / 2, 0.0, 1.0)
    gram = np.clip((gram + gram.T) / 2, 0.0, 1.0)
    return Similarity(sim, gram, notes)


def rbf_cka(
    reps: Sequence[np.ndarray],
    normalize: bool = False,
    bandwidth: float = 1.0,
    max_samples: int | None = None,
    memory_budget: int = 1 << 30,
    seed: int = 0,
) -> Similarity:
    """CKA with RBF kernels, K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), sigma = ``bandwidth`` x
    the median pairwise distance (Kornblith et al. 2019 use fractions of the median).

    This one needs the N x N kernels of all L layers. N is capped so that they fit in
    ``memory_budget`` bytes (or at ``max_samples``); the samples are then drawn at random
    (fixed ``seed``) and a warning says so.
    """
    if bandwidth <= 0:
        raise ValueError(f"RBF bandwidth must be > 0, got {bandwidth}")
    n, layers = reps[0].shape[0], len(reps)
    cap = int(math.sqrt(memory_budget / (8 * layers)))
    if max_samples is not None:
        cap = min(cap, max_samples)
    notes: list[str] = []
    if n > cap:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
        reps = [np.asarray(x)[idx] for x in reps]
        msg = f"RBF CKA builds N x N kernels for {layers} layers: using {cap} of {n} samples to stay within memory"
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    xs = prepare(reps, normalize)
    flat = []
    dead = []
    for a, x in enumerate(xs):
        sq = np.sum(x * x, axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
        med = np.median(d2)
        if not med > 0:
            dead.append(a)
            flat.append(np.zeros(d2.size))
            continue
        k = np.exp(-d2 / (2 * bandwidth**2 * med))
        k = k - k.mean(axis=0, keepdims=True)
        k = k - k.mean(axis=1, keepdims=True)  # H K H
        flat.append((k / np.linalg.norm(k)).ravel())
    phi = np.stack(flat)
    sim = _with_constant_fallback(phi @ phi.T, dead, notes)
    sim = np.clip((sim + sim.T) / 2, 0.0, 1.0)
    return Similarity(sim, sim.copy(), notes)


METRICS: Registry[Callable[..., Similarity]] = Registry("similarity metric")
METRICS.register("cka", linear_cka)
METRICS.register("cka-rbf", rbf_cka)
METRICS.register("rcca", rcca)
