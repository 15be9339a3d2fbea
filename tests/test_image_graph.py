"""st.tl.image_graph: exact and approximate kNN graphs of embeddings, stored like scanpy.pp.neighbors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph.tl import _graph


def _reference_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Float64 brute force: L2-normalise, full distance matrix, sort by (distance, index)."""
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _neighbours(adata: ad.AnnData, key: str = "image") -> list[set[int]]:
    g = adata.obsp[f"{key}_connectivities"]
    return [set(g.indices[g.indptr[i] : g.indptr[i + 1]]) for i in range(adata.n_obs)]


def _adata(x: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((x.shape[0], 1), dtype=np.float32))
    adata.obsm["emb"] = x
    return adata


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_graph_equals_brute_force_reference(dtype):
    x = np.random.default_rng(0).standard_normal((300, 40)).astype(dtype)
    adata = _adata(x)
    st.tl.image_graph(adata, "emb", n_neighbors=7, method="exact", progress=False)
    ref = _reference_knn(x, 7)
    assert _neighbours(adata) == [set(r) for r in ref]
    g = adata.obsp["image_connectivities"]
    np.testing.assert_array_equal(np.asarray(g.sum(axis=1)).ravel(), 7)
    assert g.diagonal().sum() == 0
    assert set(np.unique(g.data)) == {1.0}
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    rows, cols = adata.obsp["image_distances"].nonzero()
    np.testing.assert_allclose(
        adata.obsp["image_distances"][rows, cols].A1, np.linalg.norm(xn[rows] - xn[cols], axis=1), rtol=1e-6
    )


def test_exact_graph_breaks_ties_by_smaller_index_whatever_the_block_size(monkeypatch):
    # 4 groups of identical points: every distance within a group is 0, so ties decide.
    x = np.repeat(np.random.default_rng(1).standard_normal((4, 8)), 10, axis=0)
    results = []
    for block_elements in (10**9, 37 * 40, 1):
        monkeypatch.setattr(_graph, "_BLOCK_ELEMENTS", block_elements)
        idx, _ = _graph.knn_exact(_graph.prepare_embedding(x), 3)
        results.append(idx)
    for idx in results[1:]:
        np.testing.assert_array_equal(idx, results[0])
    group_start = (np.arange(40) // 10) * 10
    expected = np.array([[j for j in range(s, s + 10) if j != i][:3] for i, s in enumerate(group_start)])
    np.testing.assert_array_equal(results[0], expected)


def test_graph_keys_follow_scanpy_neighbors_layout_and_survive_h5ad(tmp_path):
    adata = _adata(np.random.default_rng(2).standard_normal((120, 16)).astype(np.float32))
    st.tl.image_graph(adata, "emb", n_neighbors=5, key_added="img", progress=False)
    assert adata.uns["img"]["connectivities_key"] == "img_connectivities"
    assert adata.uns["img"]["distances_key"] == "img_distances"
    params = adata.uns["img"]["params"]
    assert params["n_neighbors"] == 5 and params["method"] == "exact" and params["use_rep"] == "emb"
    path = tmp_path / "g.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.obsp["img_connectivities"] != adata.obsp["img_connectivities"]).nnz == 0
    assert back.uns["img"]["params"] == params


def test_cosine_metric_ranks_like_normalised_euclidean():
    x = np.random.default_rng(3).standard_normal((150, 12)) * np.random.default_rng(4).uniform(0.1, 5, (150, 1))
    a, b = _adata(x), _adata(x)
    st.tl.image_graph(a, "emb", metric="cosine", normalize=False, progress=False)
    st.tl.image_graph(b, "emb", metric="euclidean", normalize=True, progress=False)
    assert _neighbours(a) == _neighbours(b)


def test_auto_uses_exact_up_to_threshold_and_pynndescent_above(monkeypatch):
    calls = []

    def fake_pynndescent(rep, n_neighbors, *, metric, exclusion, random_state):
        calls.append(rep.shape[0])
        return _graph.knn_exact(rep, n_neighbors, exclusion=exclusion)

    monkeypatch.setattr(_graph, "knn_pynndescent", fake_pynndescent)
    monkeypatch.setattr(_graph, "EXACT_MAX_OBS", 100)
    small, large = (_adata(np.random.default_rng(5).standard_normal((n, 6))) for n in (100, 101))
    st.tl.image_graph(small, "emb", progress=False)
    st.tl.image_graph(large, "emb", progress=False)
    assert small.uns["image"]["params"]["method"] == "exact"
    assert large.uns["image"]["params"]["method"] == "pynndescent"
    assert calls == [101]


def test_approximate_candidates_drop_self_and_sort_by_distance_then_index():
    # row 0 lists itself; row 1 does not (approximate search missed it): its farthest candidate goes
    idx = np.array([[2, 0, 1], [0, 3, 2], [1, 0, 2], [2, 1, 3]])
    dist = np.array([[0.5, 0.0, 0.5], [0.9, 0.2, 0.7], [0.3, 0.1, 0.0], [0.0, 0.4, 0.4]])
    out_idx, out_dist = _graph.drop_self(idx, dist, 2)
    np.testing.assert_array_equal(out_idx, [[1, 2], [3, 2], [0, 1], [2, 1]])
    np.testing.assert_allclose(out_dist, [[0.5, 0.5], [0.2, 0.7], [0.1, 0.3], [0.0, 0.4]])


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda a: None, KeyError, "missing"),
        (lambda a: a.obsm["emb"].__setitem__((0, 0), np.nan), ValueError, "non-finite"),
        (lambda a: None, ValueError, "at least 31"),
    ],
    ids=["missing-rep", "nan-embedding", "too-few-spots"],
)
def test_image_graph_bad_input_raises_and_leaves_adata_unchanged(mutate, error, match):
    adata = _adata(np.random.default_rng(6).standard_normal((20, 4)))
    mutate(adata)
    before = adata.copy()
    use_rep = "missing" if match == "missing" else "emb"
    n_neighbors = 30 if match.startswith("at least") else 5
    with pytest.raises(error, match=match):
        st.tl.image_graph(adata, use_rep, n_neighbors=n_neighbors)
    assert_adata_equal(adata, before)
