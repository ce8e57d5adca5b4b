"""Golden tests of the layer metrics and the kernel-space k-means against independent computations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compressor.hints import cluster_layers, linear_cka, rbf_cka, rcca
from compressor.hints.kmeans import kernel_kmeans, position_seeds, representative


def rng_reps(seed=0, n=200, widths=(5, 8, 12)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, c)) for c in widths]


def cka_nxn(x, y):
    """001 eq. 4-5 literally: HSIC = tr(K H L H) / (n-1)^2 with linear kernels."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def mean_sq_canonical_correlations(x, y):
    """Canonical correlations as sqrt of the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx."""
    x, y = x - x.mean(0), y - y.mean(0)
    sxx, syy, sxy = x.T @ x, y.T @ y, x.T @ y
    rho2 = np.linalg.eigvals(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)).real
    p1 = min(x.shape[1], y.shape[1])
    return np.sort(rho2)[::-1][:p1].sum() / p1


def test_linear_cka_matches_the_nxn_formula():
    reps = rng_reps()
    reps[1] = np.tanh(reps[0] @ np.random.default_rng(1).normal(size=(5, 8))) + 0.5 * reps[1]
    sim = linear_cka(reps).similarity
    for a in range(3):
        for b in range(3):
            assert sim[a, b] == pytest.approx(cka_nxn(reps[a], reps[b]), rel=1e-9)


def test_rcca_matches_eigenvalue_computation():
    reps = rng_reps(widths=(4, 7, 10))
    mix = np.random.default_rng(2).normal(size=(4, 7))
    reps[1] = reps[0] @ mix + 0.8 * reps[1]
    sim = rcca(reps).similarity
    for a in range(3):
        for b in range(3):
            assert sim[a, b] == pytest.approx(mean_sq_canonical_correlations(reps[a], reps[b]), rel=1e-7, abs=1e-9)


def test_rcca_gram_equals_rcca_for_equal_widths():
    reps = rng_reps(widths=(6, 6, 6))
    s = rcca(reps)
    np.testing.assert_allclose(s.gram, s.similarity, rtol=1e-12)


def test_rbf_cka_matches_kornblith_formula():
    reps = rng_reps(n=60, widths=(3, 5))
    reps[1][:, :3] += reps[0]

    def rbf(x, frac=1.0):
        d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * frac**2 * np.median(d2)))

    n = 60
    h = np.eye(n) - 1 / n
    k, l_ = rbf(reps[0] - reps[0].mean(0)), rbf(reps[1] - reps[1].mean(0))
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    expected = hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))
    assert rbf_cka(reps).similarity[0, 1] == pytest.approx(expected, rel=1e-9)


def test_rbf_cka_caps_samples_with_a_warning():
    reps = rng_reps(n=300, widths=(3, 4))
    with pytest.warns(UserWarning, match="using 100 of 300 samples"):
        s = rbf_cka(reps, max_samples=100)
    assert s.notes and s.similarity.shape == (2, 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100.0))
def test_cka_properties(seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 6))
    y = np.tanh(x @ rng.normal(size=(6, 9))) + 0.3 * rng.normal(size=(50, 9))
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))  # random orthogonal transform
    for metric in (linear_cka, rcca):
        s = metric([x, y, x.copy(), scale * y @ q]).similarity
        assert s[0, 0] == pytest.approx(1.0) and s[0, 2] == pytest.approx(1.0)  # CKA(X, X) = 1
        np.testing.assert_allclose(s, s.T)  # symmetric
        assert s[0, 3] == pytest.approx(s[0, 1], rel=1e-6)  # invariant to orthogonal maps and isotropic scaling
        assert (s >= 0).all() and (s <= 1 + 1e-12).all()


def brute_force_kmeans(reps, k):
    """Spherical k-means with explicit N*N-dimensional kernel objects and explicit centroids."""
    phis = []
    for x in reps:
        x = x - x.mean(0)
        g = x @ x.T
        phis.append((g / np.linalg.norm(g)).ravel())
    phis = np.stack(phis)
    seeds = position_seeds(len(reps), k)
    centroids = phis[seeds]
    labels = None
    while True:
        cos = (phis @ centroids.T) / np.linalg.norm(centroids, axis=1)
        new = np.argmin(1 - cos, axis=1)
        if labels is not None and np.array_equal(new, labels):
            return labels
        labels = new
        centroids = np.stack([phis[labels == j].mean(0) for j in range(k)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_kmeans_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    base = [rng.normal(size=(40, 4)) for _ in range(3)]
    reps = [np.maximum(base[i * 3 // 9] @ rng.normal(size=(4, 6)) + rng.normal(size=(40, 6)) * rng.uniform(0.3, 2), 0) for i in range(9)]
    kernel = kernel_kmeans(linear_cka(reps).gram, 3)[0]
    brute = brute_force_kmeans(reps, 3)
    # same partition (label numbering may differ)
    assert [set(np.flatnonzero(kernel == j)) for j in range(3)] == sorted([set(np.flatnonzero(brute == j)) for j in range(3)], key=min)


def test_block_structured_similarity_recovers_blocks():
    blocks = [4, 7, 5]
    labels_true = np.repeat(np.arange(3), blocks)
    gram = np.where(labels_true[:, None] == labels_true[None], 0.9, 0.2)
    np.fill_diagonal(gram, 1.0)
    labels, iterations = kernel_kmeans(gram, 3)
    np.testing.assert_array_equal(labels, labels_true)
    assert iterations >= 1


@pytest.mark.parametrize("metric", ["cka", "rcca", "cka-rbf"])
def test_cluster_layers_on_planted_layer_groups(metric):
    rng = np.random.default_rng(0)
    reps = []
    for width in (4, 8, 16):
        latent = rng.normal(size=(300, 3))
        reps += [np.maximum(latent @ rng.normal(size=(3, width)) + 0.2 * rng.normal(size=(300, width)), 0) for _ in range(6)]
    result = cluster_layers(reps, k=3, metric=metric)
    np.testing.assert_array_equal(result.labels, np.repeat(np.arange(3), 6))
    assert result.hints == [3, 9, 15]  # centre (lower middle) of 1-6, 7-12, 13-18
    assert cluster_layers(reps, k=3, metric=metric, position="last").hints == [6, 12, 18]
    assert result.similarity.shape == (18, 18) and result.seeds == [1, 9, 18]


def test_seeds_and_positions():
    assert position_seeds(54, 3) == [0, 26, 53]
    assert position_seeds(16, 4) == [0, 5, 10, 15]
    assert position_seeds(5, 1) == [2]
    sim = np.eye(5)
    sim[1, 3] = sim[3, 1] = 0.9
    assert representative([0, 1, 2, 3], "center", sim) == 1
    assert representative([0, 1, 2, 3], "last", sim) == 3
    assert representative([0, 1, 2, 3], "medoid", sim) == 1


def test_deterministic():
    reps = rng_reps(widths=(3, 4, 5, 6, 7, 8))
    a, b = cluster_layers(reps, k=3), cluster_layers(reps, k=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.similarity, b.similarity)


# --- degenerate inputs ----------------------------------------------------------------------


def test_k_larger_than_layers():
    with pytest.raises(ValueError, match="only 3 candidate layers"):
        cluster_layers(rng_reps(), k=4)


def test_nan_is_refused():
    reps = rng_reps()
    reps[1][5, 2] = np.nan
    with pytest.raises(ValueError, match="layer 2: features contain NaN"):
        cluster_layers(reps, k=2)


def test_cca_needs_more_samples_than_channels():
    with pytest.raises(ValueError, match="more samples than channels"):
        cluster_layers(rng_reps(n=10, widths=(4, 12)), k=2, metric="rcca")


@pytest.mark.parametrize("metric", ["cka", "rcca", "cka-rbf"])
def test_constant_layer_fallback(metric):
    reps = rng_reps(widths=(4, 5, 6, 7))
    reps[2] = np.ones_like(reps[2]) * 3.0
    result = cluster_layers(reps, k=2, metric=metric)
    assert any("constant features" in n for n in result.notes)
    assert result.similarity[2, 2] == 1.0 and result.similarity[2, [0, 1, 3]].max() == 0.0


def test_duplicate_layers_never_leave_a_cluster_empty():
    x = rng_reps(widths=(5,))[0]
    reps = [x, x.copy(), x.copy(), x.copy()]  # every seed is identical: all would join cluster 0
    labels, _ = kernel_kmeans(linear_cka(reps).gram, 3)
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_rank_deficient_layer_uses_its_rank():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    dead = np.concatenate([x[:, :2], np.zeros((200, 3))], axis=1)  # 3 dead channels: rank 2
    s = rcca([x, dead]).similarity
    assert s[0, 1] == pytest.approx(1.0)  # its 2 live channels lie in x's span: both correlations are 1


def test_matrix_centroids_keep_the_papers_min_normalisation():
    """A narrow layer whose columns lie inside a wide layer's span has R^2_CCA = 1 with it (eq. 3's min(p_a, p_b));
    the kernel-space mean can only see sqrt(4/16) = 0.5 of it. The representation-space centroid keeps the 1."""
    from compressor.hints.matrix_kmeans import cka_to, matrix_kmeans, rcca_to
    from compressor.hints.similarity import prepare

    rng = np.random.default_rng(1)
    wide = rng.normal(size=(400, 16))
    narrow = wide[:, :4] @ rng.normal(size=(4, 4))  # inside the wide layer's column space
    other = rng.normal(size=(400, 4))  # unrelated
    xs = prepare([narrow, wide, other])
    padded_wide = np.pad(xs[1], ((0, 0), (0, 0)))
    bases = [np.linalg.svd(x, full_matrices=False)[0] for x in xs]
    assert rcca_to(bases, padded_wide)[0] == pytest.approx(1.0)  # min(4, 16) normalisation
    assert rcca([narrow, wide, other]).gram[0, 1] == pytest.approx(0.5)  # the kernel-space (geometric) one
    # a layer against a centroid made of itself alone scores 1 under both metrics, zero padding notwithstanding
    padded_narrow = np.pad(xs[0], ((0, 0), (0, 12)))
    assert rcca_to(bases, padded_narrow)[0] == pytest.approx(1.0)
    assert cka_to(xs, padded_narrow)[0] == pytest.approx(1.0)
    labels, _ = matrix_kmeans([narrow, wide, other], 2, "rcca", seeds=[1, 2])
    assert labels[0] == labels[1] != labels[2]


@pytest.mark.parametrize("metric", ["cka", "rcca"])
def test_matrix_and_kernel_centroids_on_planted_groups(metric):
    rng = np.random.default_rng(0)
    reps = []
    for width in (4, 8, 16):
        latent = rng.normal(size=(300, 3))
        reps += [np.maximum(latent @ rng.normal(size=(3, width)) + 0.2 * rng.normal(size=(300, width)), 0) for _ in range(6)]
    for centroid in ("matrix", "kernel"):
        result = cluster_layers(reps, k=3, metric=metric, centroid=centroid)
        np.testing.assert_array_equal(result.labels, np.repeat(np.arange(3), 6))
    with pytest.raises(ValueError, match="cka-rbf: kernel only"):
        cluster_layers(reps, k=3, metric="cka-rbf", centroid="matrix")


@pytest.mark.parametrize("metric", ["rcca", "cka"])
def test_centroid_space_equals_the_direct_computation(metric):
    """The (sum C)^2 products give the same metric to a padded-mean centroid as the N-row matrices themselves."""
    from compressor.hints.matrix_kmeans import CentroidSpace, cka_to, rcca_to
    from compressor.hints.similarity import prepare

    rng = np.random.default_rng(2)
    reps = [rng.normal(size=(200, w)) @ rng.normal(size=(w, w)) for w in (3, 5, 8, 8)]
    space = CentroidSpace(reps, normalize=False)
    xs = prepare(reps)
    members = np.array([0, 2, 3])
    centroid = np.mean([np.pad(xs[b], ((0, 0), (0, 8 - xs[b].shape[1]))) for b in members], axis=0)
    bases = [np.linalg.svd(x, full_matrices=False)[0] for x in xs]
    direct = rcca_to(bases, centroid) if metric == "rcca" else cka_to(xs, centroid)
    np.testing.assert_allclose(space.similarity(members, metric), direct, rtol=1e-8, atol=1e-10)
