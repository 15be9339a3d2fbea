"""The spatial-proximity control of EPS: ``exclude_radius`` and ``var[f"{key}_spatial"]``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph.errors import InvalidParameterError, StmorphKeyError, TooFewObservationsError
from stmorph.tl import _graph
from stmorph.tl._spatial import Exclusion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_eps_bins import simulate_bins  # the bin-level simulation of the benchmark

PITCH_UM = 100.0  # 16 px tiles at 6.25 µm/px
RADIUS_UM = 450.0  # three smoothing lengths of the smooth genes (150 µm)


@pytest.fixture(scope="module")
def slice_():
    """A 20 × 20 grid: 3 image-driven genes, 2 spatially smooth genes independent of the image."""
    sdata = st.datasets.simulate(400, 60, n_planted=3, n_smooth=2, spot_px=16, mpp=PITCH_UM / 16, random_state=0)
    adata = sdata.tables["table"]
    st.pp.prepare_expression(adata)
    return adata


def _eps(adata, **kwargs):
    out = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        st.tl.eps(out, use_rep="latent_tile", progress=False, **kwargs)
    return out


def _reference_knn_outside(x: np.ndarray, xy: np.ndarray, radius: float, k: int) -> np.ndarray:
    """Float64 brute force: L2-normalise, every distance, spots within ``radius`` (and self) excluded."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    near = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1) <= radius**2
    d[near] = np.inf
    return np.sort(np.argsort(d, axis=1, kind="stable")[:, :k], axis=1)


def test_exclusion_removes_spatial_autocorrelation_but_keeps_image_signal(slice_):
    var = slice_.var
    default = _eps(slice_).var
    excluded = _eps(slice_, exclude_radius=RADIUS_UM).var
    planted, smooth = var.index[var["planted"]], var.index[var["smooth"]]
    # the image graph of tiles wider than the pitch links spatial neighbours: both kinds score high
    assert default.loc[smooth, "eps"].min() > 0.2
    assert default.loc[planted, "eps"].min() > 0.1
    # with neighbours farther than the smoothing length, the smooth genes fall to ~0 ...
    assert excluded.loc[smooth, "eps"].abs().max() < 0.1
    # ... while the genes the image drives stay high
    assert excluded.loc[planted, "eps"].min() > 0.15
    # the spatial column tells the two kinds apart without any exclusion
    assert default.loc[smooth, "eps_spatial"].min() > 0.3
    assert default.loc[planted, "eps_spatial"].abs().max() < 0.1


def test_spatial_column_is_geary_on_the_spatial_knn_graph():
    rng = np.random.default_rng(4)
    n, k = 120, 4
    adata = ad.AnnData(rng.standard_normal((n, 6)))
    adata.obsm["spatial"] = rng.uniform(0, 5000, size=(n, 2))  # continuous: no tied neighbours
    adata.obsm["emb"] = rng.standard_normal((n, 3))
    st.tl.eps(adata, use_rep="emb", n_neighbors=k, progress=False)
    xy, x = adata.obsm["spatial"], adata.X
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    numer = ((x[:, None, :] - x[nearest]) ** 2).sum(axis=(0, 1))
    c = (n - 1) * numer / (2 * n * k * ((x - x.mean(axis=0)) ** 2).sum(axis=0))
    np.testing.assert_allclose(adata.var["eps_spatial"], -np.log(c), rtol=1e-10)


@pytest.mark.parametrize("method", ["exact", pytest.param("pynndescent", marks=pytest.mark.slow)])  # numba JIT
def test_excluded_graph_equals_brute_force_reference(method):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((150, 6))
    xy = rng.uniform(0, 1000, size=(150, 2))
    conn, _, _ = _graph.knn_graph(x, 4, method=method, exclusion=Exclusion(xy, 200.0))
    got = np.stack([conn.indices[conn.indptr[i] : conn.indptr[i + 1]] for i in range(150)])
    expected = _reference_knn_outside(x, xy, 200.0, 4)
    agree = (got == expected).all(axis=1).mean()
    assert agree == 1.0 if method == "exact" else agree > 0.95
    assert (np.linalg.norm(xy[got] - xy[:, None, :], axis=2) > 200.0).all()  # never within the radius


def test_excluded_graph_is_stored_with_its_radius_and_not_reused_silently(slice_):
    out = _eps(slice_)
    default_graph = out.obsp["image_connectivities"].copy()
    assert "exclude_radius" not in out.uns["image"]["params"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        st.tl.eps(out, use_rep="latent_tile", exclude_radius=RADIUS_UM, progress=False)
    assert out.uns["image"]["params"]["exclude_radius"] == RADIUS_UM
    assert out.uns["stmorph"]["eps"]["eps"]["exclude_radius"] == RADIUS_UM
    assert (out.obsp["image_connectivities"] != default_graph).nnz > 0  # rebuilt, not reused
    # the stored graph now has the radius: using it records the radius, asking for another is an error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        st.tl.eps(out, key_added="again", progress=False)
    assert out.uns["stmorph"]["eps"]["again"]["exclude_radius"] == RADIUS_UM
    with pytest.raises(InvalidParameterError, match="exclude_radius=450"):
        st.tl.eps(out, exclude_radius=200.0, progress=False)


def test_exclusion_reads_the_pixel_size_from_extract_patches():
    sdata = st.datasets.simulate(64, 8, n_planted=2, spot_px=16, mpp=6.25, random_state=1)
    adata = st.pp.extract_patches(sdata, patch_size=16, target_mpp=6.25, progress=False, copy=True)
    del adata.uns["stmorph"]["dataset"]
    st.tl.image_graph(adata, "latent", exclude_radius=150.0, progress=False)
    conn = adata.obsp["image_connectivities"].tocoo()
    xy_um = adata.obsm["spatial"] * 6.25
    assert np.linalg.norm(xy_um[conn.row] - xy_um[conn.col], axis=1).min() > 150.0


def _no_spatial(a):
    del a.obsm["spatial"]


def _no_mpp(a):
    del a.uns["stmorph"]["dataset"]


@pytest.mark.parametrize(
    ("radius", "mutate", "error", "match"),
    [
        (0.0, None, InvalidParameterError, "finite number"),
        (-5.0, None, InvalidParameterError, "finite number"),
        (float("nan"), None, InvalidParameterError, "finite number"),
        (float("inf"), None, InvalidParameterError, "finite number"),
        (100.0, _no_spatial, StmorphKeyError, "obsm\\['spatial'\\]"),
        (100.0, _no_mpp, InvalidParameterError, "pixel size"),
        (2500.0, None, TooFewObservationsError, "candidate"),
    ],
    ids=["zero", "negative", "nan", "inf", "no-coordinates", "no-pixel-size", "too-large"],
)
@pytest.mark.parametrize("call", ["eps", "image_graph"])
def test_bad_exclusion_raises_named_error_and_leaves_adata_unchanged(slice_, radius, mutate, error, match, call):
    adata = slice_.copy()
    if mutate is not None:
        mutate(adata)
    before = adata.copy()
    with pytest.raises(error, match=match):
        if call == "eps":
            st.tl.eps(adata, use_rep="latent_tile", exclude_radius=radius, progress=False)
        else:
            st.tl.image_graph(adata, "latent_tile", exclude_radius=radius, progress=False)
    assert_adata_equal(adata, before)


def test_radius_leaving_fewer_than_2k_candidates_still_finds_the_k_nearest_outside():
    # spot 0 sits alone; the other 11 lie within 10 µm of each other: each of them keeps exactly
    # one candidate (spot 0) farther than 50 µm, the k = 1 it needs, fewer than the 2k the search keeps
    rng = np.random.default_rng(8)
    xy = np.vstack([[1000.0, 1000.0], rng.uniform(0, 10, size=(11, 2))])
    x = rng.standard_normal((12, 3))
    idx, _ = _graph.knn_exact(_graph.prepare_embedding(x), 1, exclusion=Exclusion(xy, 50.0))
    np.testing.assert_array_equal(idx[1:, 0], 0)
    np.testing.assert_array_equal(idx[0], _reference_knn_outside(x, xy, 50.0, 1)[0])


def test_eps_warns_when_the_image_graph_mostly_joins_spatial_neighbours():
    sdata = st.datasets.simulate(400, 30, n_planted=5, n_smooth=5, random_state=0)
    table = sdata.tables["table"]
    st.pp.prepare_expression(table)
    # shared-pixel features (tiles wider than the pitch): the image graph links mostly adjacent spots
    with pytest.warns(UserWarning, match="join spatially adjacent spots"):
        st.tl.eps(table, use_rep="latent_tile", progress=False)
    assert table.uns["sps"]["adjacent_edge_fraction"] > 0.5
    # the image factors alone: few adjacent edges, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        st.tl.eps(table, use_rep="latent", graph_key="factors", key_added="eps_factors", progress=False)
    assert table.uns["sps_eps_factors"]["adjacent_edge_fraction"] < 0.2


def test_at_bin_scale_smooth_genes_the_image_lacks_are_significant_only_without_exclusion():
    # 30 × 30 bins of 8 µm whose image features are smooth spatial fields: image neighbours are
    # spatial neighbours. Smooth genes the image does not carry and image-carried genes, both 24 µm
    adata = simulate_bins(30, n_image=3, n_smooth=3, n_noise=3, seed=0)
    with pytest.warns(UserWarning, match="join spatially adjacent spots"):
        st.tl.eps(adata, use_rep="X_image", progress=False)
    st.tl.eps(adata, use_rep="X_image", exclude_radius=64.0, graph_key="far", key_added="far", progress=False)
    var = adata.var
    smooth, image = var.index[var["kind"] == "smooth"], var.index[var["kind"] == "image"]
    assert adata.uns["sps"]["adjacent_edge_fraction"] > 0.5
    # without the exclusion: false positives through spatial adjacency
    assert var.loc[smooth, "eps_pval"].max() < 1e-20
    assert var.loc[image, "eps_pval"].max() < 1e-20
    # with neighbours farther than 64 µm (8 bins, well past the 24 µm smoothing): no signal left
    assert var.loc[smooth, "far_pval"].min() > 0.01
    assert var.loc[image, "far_pval"].max() < 1e-10  # the image-carried genes keep theirs
    assert adata.uns["sps_far"]["adjacent_edge_fraction"] == 0.0


def _c2_with_fixture_embedding(her2st_adata, data_dir) -> ad.AnnData:
    """HER2ST C2 (coordinates and pixel size) with the fixtures' image embedding, expression prepared."""
    adata = her2st_adata("C2").copy()
    ref = np.load(data_dir.parent / "fixtures" / "eps_reference_C2.npz")
    embedding = pd.DataFrame(ref["embedding"], index=ref["obs_names"])
    adata.obsm["X_pixel"] = embedding.loc[adata.obs_names].to_numpy()
    st.pp.prepare_expression(adata)
    return adata


def test_sps_passes_exclude_radius_through_and_reports_it(her2st_adata, data_dir):
    adata = _c2_with_fixture_embedding(her2st_adata, data_dir)
    before = adata.copy()
    paper, paper_eps = st.tl.sps({"C2": adata}, use_rep="X_pixel")
    far, far_eps = st.tl.sps({"C2": adata}, use_rep="X_pixel", exclude_radius=1000.0)
    assert_adata_equal(adata, before)  # the slice is left unchanged
    assert np.isnan(paper.loc[0, "exclude_radius"]) and far.loc[0, "exclude_radius"] == 1000.0
    assert abs(far.loc[0, "sps"] - paper.loc[0, "sps"]) > 1e-3
    single = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        st.tl.eps(single, use_rep="X_pixel", exclude_radius=1000.0, progress=False)
    assert far.loc[0, "sps"] == pytest.approx(single.uns["sps"]["sps"])
    assert single.uns["sps"]["exclude_radius"] == 1000.0
    pd.testing.assert_series_equal(
        far_eps["C2"].reindex(single.var_names), single.var["eps"], check_names=False, check_index=False
    )
    assert not np.allclose(far_eps["C2"], paper_eps["C2"], equal_nan=True)


def test_sps_reports_the_radius_of_a_stored_graph_and_refuses_a_bad_one(slice_):
    excluded, paper = _eps(slice_, exclude_radius=RADIUS_UM), _eps(slice_)  # each stores its graph as "image"
    summary, _ = st.tl.sps({"excluded": excluded, "paper": paper})
    assert list(summary["exclude_radius"].fillna(-1)) == [RADIUS_UM, -1]
    with pytest.raises(InvalidParameterError, match="exclude_radius must be a finite number"):
        st.tl.sps({"a": slice_}, use_rep="latent_tile", exclude_radius=-1.0)
