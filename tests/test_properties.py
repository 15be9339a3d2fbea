"""Property tests (hypothesis): EPS invariances, maximal EPS on cliques, convex retrieval, symmetric metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st_
from scipy import sparse

from stmorph.models._retrieval import retrieve
from stmorph.tl._eps import compute_eps
from stmorph.tl._graph import knn_graph
from stmorph.tl._metrics import hit_at, pearson, rmse, spearman, ssim

FEW = settings(max_examples=15, deadline=None)
seeds = st_.integers(0, 2**32 - 1)


def _slice(seed: int, n: int, n_genes: int, k: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """A kNN graph of random embeddings and expression that partly follows them."""
    rng = np.random.default_rng(seed)
    rep = rng.normal(size=(n, 4))
    graph, _, _ = knn_graph(rep, k, method="exact")
    x = rep[:, :1] * rng.normal(size=(1, n_genes)) + rng.normal(size=(n, n_genes))
    return graph, x


def _eps(graph, x) -> np.ndarray:
    return compute_eps(graph, x, pd.RangeIndex(x.shape[1])).eps


@FEW
@given(
    seed=seeds,
    n=st_.integers(12, 60),
    k=st_.integers(1, 6),
    scale=st_.floats(1e-3, 1e3) | st_.floats(-1e3, -1e-3),
    shift=st_.floats(-1e3, 1e3),
)
def test_eps_is_invariant_to_shifting_and_scaling_a_gene(seed, n, k, scale, shift):
    # shift in units of the new sd: a shift of more than ~1e6 sd makes the gene numerically
    # constant (float64 cannot resolve its variance), which EPS reports as NaN by design
    graph, x = _slice(seed, n, 3, k)
    moved = x.copy()
    moved[:, 1] = moved[:, 1] * scale + shift * abs(scale)
    np.testing.assert_allclose(_eps(graph, moved), _eps(graph, x), rtol=1e-6, atol=1e-9)


@FEW
@given(seed=seeds, n=st_.integers(12, 60), k=st_.integers(1, 6))
def test_eps_is_invariant_to_permuting_spots_together_with_the_graph(seed, n, k):
    graph, x = _slice(seed, n, 4, k)
    perm = np.random.default_rng(seed + 1).permutation(n)
    permuted_graph = graph[perm][:, perm]
    np.testing.assert_allclose(_eps(permuted_graph, x[perm]), _eps(graph, x), rtol=1e-9, atol=1e-12)


def _cliques(sizes: list[int]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Disjoint complete graphs (no self-loops) and each spot's component label."""
    blocks = [np.ones((s, s)) - np.eye(s) for s in sizes]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return sparse.csr_matrix(sparse.block_diag(blocks)), labels


@FEW
@given(sizes=st_.lists(st_.integers(2, 8), min_size=2, max_size=6), seed=seeds)
def test_gene_constant_on_each_clique_has_maximal_eps(sizes, seed):
    graph, labels = _cliques(sizes)
    rng = np.random.default_rng(seed)
    levels = rng.permutation(len(sizes)).astype(float) * rng.uniform(0.1, 10)  # distinct values per component
    piecewise = levels[labels]
    noisy = rng.normal(size=(len(labels), 3))
    eps = _eps(graph, np.column_stack([piecewise, noisy]))
    # no difference along any edge: Geary's C = 0 up to float64 rounding, EPS = -log C at its maximum
    assert np.exp(-eps[0]) < 1e-12, eps[0]
    assert np.all(eps[1:] < eps[0])


@FEW
@given(
    seed=seeds,
    n_ref=st_.integers(3, 40),
    n_query=st_.integers(1, 20),
    k=st_.integers(1, 50),
    aggregation=st_.sampled_from(["mean", "weighted"]),
)
def test_retrieval_predictions_are_convex_combinations_of_reference_profiles(seed, n_ref, n_query, k, aggregation):
    rng = np.random.default_rng(seed)
    reference, query = rng.normal(size=(n_ref, 5)), rng.normal(size=(n_query, 5))
    expression = rng.gamma(1.0, 3.0, size=(n_ref, 7)) * rng.choice([-1.0, 1.0], size=7)
    predicted = retrieve(query, reference, expression, k=k, aggregation=aggregation, chunk_size=7)
    tol = 1e-5 * (1 + np.abs(expression).max())
    assert np.all(predicted >= expression.min(0) - tol)
    assert np.all(predicted <= expression.max(0) + tol)


@FEW
@given(seed=seeds, n=st_.integers(3, 30), n_genes=st_.integers(1, 6))
def test_correlation_rmse_and_ssim_are_symmetric(seed, n, n_genes):
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, 1.0, size=(n, n_genes))
    b = a * rng.uniform(0, 2, size=(1, n_genes)) + rng.gamma(1.0, 1.0, size=(n, n_genes))
    for metric in (pearson, spearman, rmse, ssim):
        np.testing.assert_allclose(metric(a, b), metric(b, a), rtol=1e-10, atol=1e-12, err_msg=metric.__name__)


@FEW
@given(seed=seeds, n=st_.integers(1, 20), n_genes=st_.integers(2, 8), data=st_.data())
def test_hit_at_is_symmetric_and_perfect_on_itself(seed, n, n_genes, data):
    t = data.draw(st_.integers(1, n_genes))
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, n_genes)), rng.normal(size=(n, n_genes))
    np.testing.assert_array_equal(hit_at(a, b, t), hit_at(b, a, t))
    assert hit_at(a, a, t).all()


@FEW
@given(seed=seeds, n=st_.integers(3, 30))
def test_perfect_prediction_scores_perfectly(seed, n):
    a = np.random.default_rng(seed).gamma(2.0, 1.0, size=(n, 4))
    np.testing.assert_allclose(pearson(a, a), 1.0)
    np.testing.assert_allclose(spearman(a, a), 1.0)
    np.testing.assert_allclose(rmse(a, a), 0.0)
    np.testing.assert_allclose(ssim(a, a), 1.0)
