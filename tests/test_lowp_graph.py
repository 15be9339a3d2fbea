"""The int8 candidate search of the exact kNN graph: proven error bounds, and the very graph of the float32 search."""

from __future__ import annotations

import platform
import sys

import anndata as ad
import numpy as np
import pytest

import stmorph as st
from stmorph.errors import InvalidParameterError
from stmorph.models import Int8Gram, _lowp, int8_available
from stmorph.tl import _graph
from stmorph.tl._spatial import Exclusion

needs_int8 = pytest.mark.skipif(not int8_available(), reason="torch's oneDNN int8 product does not run here")


def _tied_points(seed: int = 0) -> np.ndarray:
    """Points built to tie: 71 copies of one point, near-copies, and 12 points at exactly one distance from a centre.

    Coordinates are multiples of 1/8 where they must tie, so every distance among them is exact in
    float64 and equal distances are equal to the last bit. The rest are random points.
    """
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((900, 48)) * 8) / 8
    x[100:170] = x[99]  # 71 copies: more than the int8 search's 64 candidates, all at distance 0
    x[200:210] = x[199] + 1e-6 * rng.standard_normal((10, 48))  # near-copies (resolved only in float64)
    centre = x[300]
    for axis in range(12):  # 12 points at distance exactly 0.5 from the centre, one per axis
        x[301 + axis] = centre
        x[301 + axis, axis] += 0.5 if axis % 2 else -0.5
    return x.astype(np.float32)


def _brute_force(x: np.ndarray, k: int, exclusion: Exclusion | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float64 distances from coordinate differences, every pair; the ``k`` nearest by (distance, index)."""
    x = x.astype(np.float64)
    n = x.shape[0]
    dist = np.empty((n, n))
    for i in range(n):
        dist[i] = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
    np.fill_diagonal(dist, np.inf)
    if exclusion is not None:
        offset = exclusion.xy[:, None, :] - exclusion.xy[None, :, :]
        dist[(offset**2).sum(-1) <= exclusion.radius**2] = np.inf
    order = np.lexsort((np.broadcast_to(np.arange(n), (n, n)), dist), axis=1)[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def test_int8_products_stay_within_their_proven_bound():
    rng = np.random.default_rng(3)
    cases = {
        "gaussian": rng.standard_normal((300, 200)),
        "non-negative, wide range": np.abs(rng.standard_normal((300, 200))) ** 3,
        "zero rows and an outlier": np.vstack(
            [np.zeros((5, 200)), rng.standard_normal((294, 200)), np.full((1, 200), 40.0)]
        ),
    }
    for name, x in cases.items():
        x = x.astype(np.float32)
        gram = Int8Gram(x)
        exact = x.astype(np.float64) @ x.T.astype(np.float64)
        for rows, cols in [(slice(0, 150), slice(150, 300)), (slice(100, 300), slice(0, 100))]:
            sims, bound = gram.products(rows, gram.pack(cols))
            err = np.abs(sims - exact[rows, cols])
            assert err.max() <= bound, name
            # the bound is a real constraint: a small part of the largest possible product
            norms = np.linalg.norm(x.astype(np.float64), axis=1)
            assert bound < 0.1 * norms[rows].max() * norms[cols].max(), name


def test_int8_products_refuse_a_kernel_that_is_not_exact(monkeypatch):
    x = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    gram = Int8Gram(x)
    packed = gram.pack(slice(0, 50))
    exact_matmul = _lowp._int8_matmul

    def saturating(*args):  # as vpmaddubsw would with 8-bit codes: the pin row's sums come out wrong
        out = exact_matmul(*args)
        out[-1] = np.clip(out[-1], -1e-3, 1e-3)
        return out

    monkeypatch.setattr(_lowp, "_int8_matmul", saturating)
    with pytest.raises(RuntimeError, match="exact integer sums"):
        gram.products(slice(0, 50), packed)


@pytest.mark.skipif(_lowp.int8_levels() != 127, reason="the int8 kernel here sums 8-bit codes exactly (or is absent)")
def test_pin_row_catches_the_saturation_of_8_bit_codes_on_avx2():
    # AVX2's vpmaddubsw saturates int16 pair sums of 8-bit codes: the real kernel, not a mock
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    gram = Int8Gram(x, levels=255)
    with pytest.raises(RuntimeError, match="exact integer sums"):
        gram.products(slice(0, 64), gram.pack(slice(0, 64)))
    seven_bit = Int8Gram(x, levels=127)
    sims, bound = seven_bit.products(slice(0, 64), seven_bit.pack(slice(0, 64)))
    assert np.abs(sims - x.astype(np.float64) @ x.T.astype(np.float64)).max() <= bound


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's int8 kernel is x86")
def test_int8_kernel_is_exact_on_x86():
    assert int8_available()


@needs_int8
@pytest.mark.parametrize("block_elements", [2**22, 97 * 97])
def test_int8_graph_equals_float32_graph_on_tied_points(monkeypatch, block_elements):
    monkeypatch.setattr(_graph, "_BLOCK_ELEMENTS", block_elements)  # one block, or many blocks
    x = _tied_points()
    k = 5
    idx8, dist8, recomputed = _graph.knn_search(x, k, precision="int8")
    idx32, dist32 = _graph.knn_exact(x, k, precision="float32")
    ref_idx, ref_dist = _brute_force(x, k)
    np.testing.assert_array_equal(idx32, ref_idx)  # the float32 search is right on these ties ...
    np.testing.assert_array_equal(idx8, idx32)  # ... and the int8 one gives the same neighbours
    np.testing.assert_allclose(dist8, ref_dist, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dist8, dist32)
    # the 71 copies tie at distance 0 beyond the 64 candidates: the proof cannot cover them, so they were recomputed
    assert {99, *range(100, 170)} <= set(recomputed.tolist())
    assert recomputed.size < x.shape[0] // 4  # ... and the proof covers most rows
    np.testing.assert_array_equal(idx8[100], [99, 101, 102, 103, 104])  # ties broken by the smaller index
    assert set(idx8[300]) <= set(range(301, 313))  # the centre's neighbours: five of its 12 equidistant points
    np.testing.assert_array_equal(idx8[300], [301, 302, 303, 304, 305])


@needs_int8
def test_int8_graph_equals_float32_graph_with_a_spatial_exclusion(monkeypatch):
    monkeypatch.setattr(_graph, "_BLOCK_ELEMENTS", 97 * 97)
    x = _tied_points(1)
    xy = np.random.default_rng(2).uniform(0, 1000, (x.shape[0], 2))
    exclusion = Exclusion(xy, 60.0)
    idx8, dist8, recomputed = _graph.knn_search(x, 4, exclusion=exclusion, precision="int8")
    idx32, _, recomputed32 = _graph.knn_search(x, 4, exclusion=exclusion, precision="float32")
    ref_idx, ref_dist = _brute_force(x, 4, exclusion)
    np.testing.assert_array_equal(idx8, ref_idx)
    np.testing.assert_array_equal(idx32, ref_idx)
    np.testing.assert_allclose(dist8, ref_dist, rtol=1e-12, atol=1e-12)
    assert recomputed.size > 0
    # the near-copies 199-209 tie in float32 beyond its 2k = 8 candidates once the exclusion removes
    # some of them: only the proof's recomputation gets them right
    assert set(range(199, 210)) & set(recomputed32.tolist())


@needs_int8
def test_eps_on_the_int8_graph_equals_eps_on_the_float32_graph():
    sim = st.datasets.simulate(400, 30, n_planted=5, random_state=4, spot_px=16)
    adata = sim.tables["table"]
    st.pp.prepare_expression(adata)
    results = {}
    for precision in ("float32", "int8"):
        a = adata.copy()
        st.tl.image_graph(a, "latent", precision=precision, progress=False)
        assert a.uns["image"]["params"]["precision"] == precision
        st.tl.eps(a, progress=False)
        results[precision] = a
    g32, g8 = results["float32"].obsp["image_connectivities"], results["int8"].obsp["image_connectivities"]
    assert (g32 != g8).nnz == 0
    np.testing.assert_allclose(results["int8"].var["eps"], results["float32"].var["eps"], rtol=1e-12, equal_nan=True)
    assert np.isfinite(results["int8"].var["eps"]).sum() > 20


def test_auto_precision_searches_in_int8_only_for_large_euclidean_graphs_once_torch_is_loaded(monkeypatch):
    large = _graph.INT8_MIN_OBS
    assert "torch" in sys.modules  # int8_available() imported it
    assert _graph.resolve_precision("auto", "euclidean", large) == ("int8" if int8_available() else "float32")
    assert _graph.resolve_precision("auto", "euclidean", large - 1) == "float32"
    assert _graph.resolve_precision("auto", "cosine", large) == "float32"
    assert _graph.resolve_precision("float32", "euclidean", large) == "float32"
    monkeypatch.delitem(sys.modules, "torch")  # a process that never imported torch does not import it for this
    assert _graph.resolve_precision("auto", "euclidean", large) == "float32"
    assert "torch" not in sys.modules


def test_int8_search_of_a_cosine_graph_is_refused():
    adata = ad.AnnData(np.zeros((30, 1), dtype=np.float32))
    adata.obsm["emb"] = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    with pytest.raises(InvalidParameterError, match="metric='euclidean'"):
        st.tl.image_graph(adata, "emb", metric="cosine", precision="int8", progress=False)
    assert "image" not in adata.uns
