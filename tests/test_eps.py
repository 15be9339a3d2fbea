"""st.tl.eps / st.tl.sps: fidelity to the published EPS, statistics, interop, bad input."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import squidpy as sq
from _adata_compare import assert_adata_equal
from scipy import sparse, stats
from sklearn.preprocessing import normalize

import stmorph as st
from stmorph.errors import InputTypeError, InvalidParameterError, ShapeMismatchError, StmorphKeyError
from stmorph.tl._eps import compute_eps, eps_record
from stmorph.tl._geary import geary_terms, gearys_c

FIXTURES = "fixtures"


def _fixture_adata(data_dir, section: str, *, as_sparse: bool = False) -> tuple[ad.AnnData, dict]:
    ref = dict(np.load(data_dir.parent / FIXTURES / f"eps_reference_{section}.npz"))
    counts = sparse.csr_matrix(ref["counts"]) if as_sparse else ref["counts"]
    adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=ref["obs_names"]), var=pd.DataFrame(index=ref["raw_var_names"]))
    adata.obsm["X_pixel"] = ref["embedding"]
    return adata, ref


def _naive_geary(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Geary's C by its definition with dense loops-free broadcasting (independent of the sparse code)."""
    n = w.shape[0]
    out = []
    for col in x.T:
        col = col.astype(np.float64)
        num = (w * (col[:, None] - col[None, :]) ** 2).sum()
        out.append((n - 1) * num / (2 * w.sum() * ((col - col.mean()) ** 2).sum()))
    return np.array(out)


def _random_graph(n: int, seed: int) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    w = sparse.random(n, n, density=0.05, random_state=seed, data_rvs=lambda k: rng.uniform(0.1, 2.0, k))
    w.setdiag(0)
    w.eliminate_zeros()
    return sparse.csr_matrix(w)


@pytest.mark.parametrize("section", ["C2", "C3"])
@pytest.mark.parametrize("as_sparse", [False, True], ids=["dense-counts", "sparse-counts"])
def test_eps_matches_published_implementation(data_dir, section, as_sparse):
    adata, ref = _fixture_adata(data_dir, section, as_sparse=as_sparse)
    st.pp.prepare_expression(adata)
    assert list(adata.var_names) == list(ref["var_names"])
    for k in (5, 10):
        st.tl.eps(adata, use_rep="X_pixel", n_neighbors=k, progress=False)
        np.testing.assert_allclose(adata.var["eps"].to_numpy(), ref[f"eps_k{k}"], rtol=0, atol=1e-6)
    finite = np.isfinite(ref["eps_k10"])
    assert adata.uns["sps"]["sps"] == pytest.approx(ref["eps_k10"][finite].mean(), abs=1e-6)
    assert adata.uns["sps"]["n_genes"] == finite.sum()


def _csr_with_duplicates(x: np.ndarray) -> sparse.csr_matrix:
    """``x`` as a non-canonical CSR matrix: every stored value split into two entries, plus stored zeros."""
    coo = sparse.coo_matrix(x)
    rows = np.r_[coo.row, coo.row, 0]
    cols = np.r_[coo.col, coo.col, 0]
    data = np.r_[coo.data / 4, 3 * coo.data / 4, 0.0]
    m = sparse.csr_matrix(x.shape)
    m.indptr = np.searchsorted(rows[np.argsort(rows, kind="stable")], np.arange(x.shape[0] + 1)).astype(np.int32)
    order = np.argsort(rows, kind="stable")
    m.indices, m.data = cols[order].astype(np.int32), data[order]
    m.has_canonical_format = False
    return m


@pytest.mark.parametrize("kind", ["dense64", "dense32", "fortran", "int", "sparse", "csc", "sparse32", "duplicates"])
def test_geary_c_equals_definition_on_weighted_directed_graph(kind):
    rng = np.random.default_rng(0)
    w = _random_graph(80, seed=1)
    x = rng.poisson(1.0, size=(80, 12)).astype(np.float64) * rng.uniform(0.5, 3, 12)
    expected = _naive_geary(w.toarray(), x)
    data = {
        "dense64": x,
        "dense32": x.astype(np.float32),
        "fortran": np.asfortranarray(x),
        "int": np.round(x).astype(np.int64),
        "sparse": sparse.csr_matrix(x),
        "csc": sparse.csc_matrix(x),
        "sparse32": sparse.csr_matrix(x, dtype=np.float32),
        "duplicates": _csr_with_duplicates(x),
    }[kind]
    if kind == "int":
        expected = _naive_geary(w.toarray(), data.astype(np.float64))
    numer, ss, _ = geary_terms(w, data)
    np.testing.assert_allclose(gearys_c(numer, ss, 80, w.sum()), expected, rtol=1e-5 if kind.endswith("32") else 1e-10)


@pytest.mark.parametrize("rows", [79, 81])
def test_geary_terms_refuses_a_graph_of_another_size(rows):
    # the compiled pass indexes rows by the graph's column indices: a mismatch must not reach it
    x = np.random.default_rng(0).standard_normal((rows, 3))
    with pytest.raises(ShapeMismatchError, match=r"\(80, 80\)"):
        geary_terms(_random_graph(80, seed=1), x)


def _prepared_sim(sim_table) -> ad.AnnData:
    st.pp.prepare_expression(sim_table)
    st.tl.image_graph(sim_table, "latent", n_neighbors=5, progress=False)
    return sim_table


def test_eps_equals_minus_log_squidpy_geary_on_the_stored_graph(sim_table):
    adata = _prepared_sim(sim_table)
    st.tl.eps(adata, pvalues="normality", progress=False)
    for transformation in (True, False):
        df = sq.gr.spatial_autocorr(
            adata,
            connectivity_key="image_connectivities",
            mode="geary",
            transformation=transformation,
            copy=True,
            n_jobs=1,
        ).reindex(adata.var_names)
        # every spot has exactly k out-edges, so squidpy's row normalisation scales all weights by
        # 1/k, which Geary's C does not see: both settings give our C.
        np.testing.assert_allclose(adata.var["eps"], -np.log(df["C"]), atol=1e-7)
        # same normality null; ours is one-sided towards small C (squidpy takes the nearer tail).
        # squidpy sums the row-normalised float32 weights (0.2) in float32, so its variance is off
        # by ~1e-7 relative, which far in the tail moves p by ~1e-3 relative.
        rtol = 1e-3 if transformation else 1e-5
        small = df["C"].to_numpy() < 1
        np.testing.assert_allclose(adata.var["eps_pval"][small], df["pval_norm"][small], rtol=rtol)
        np.testing.assert_allclose(adata.var["eps_pval"][~small], 1 - df["pval_norm"][~small], rtol=rtol)


def test_squidpy_row_normalisation_equals_our_c_on_the_row_normalised_graph(sim_table):
    adata = _prepared_sim(sim_table)
    w = _random_graph(adata.n_obs, seed=3)  # unequal out-degrees: row normalisation matters
    adata.obsp["custom_connectivities"] = w
    st.tl.eps(adata, graph_key="custom", progress=False)
    plain = adata.var["eps"].to_numpy()
    adata.obsp["rownorm_connectivities"] = normalize(w, norm="l1", axis=1)
    st.tl.eps(adata, graph_key="rownorm", key_added="eps_rownorm", progress=False)
    df = sq.gr.spatial_autocorr(
        adata, connectivity_key="custom_connectivities", mode="geary", copy=True, n_jobs=1
    ).reindex(adata.var_names)
    np.testing.assert_allclose(adata.var["eps_rownorm"], -np.log(df["C"]), atol=1e-7)
    assert np.abs(plain - adata.var["eps_rownorm"].to_numpy()).max() > 1e-3


def test_planted_genes_are_predictable_and_noise_genes_are_not(sim_table):
    adata = _prepared_sim(sim_table)
    st.tl.eps(adata, progress=False)
    planted = adata.var["planted"].to_numpy()
    eps, q = adata.var["eps"].to_numpy(), adata.var["eps_qval"].to_numpy()
    assert eps[planted].min() > eps[~planted].max()
    assert (q[planted] < 0.05).all()
    # normalize_total couples noise genes weakly to the planted ones (library composition), so a
    # few noise genes carry real image signal; most must not.
    assert (q[~planted] > 0.05).mean() >= 0.8
    assert adata.uns["sps"]["sps"] == pytest.approx(eps.mean())


def test_permutation_pvalues_are_seeded_and_match_a_naive_loop(sim_table):
    adata = _prepared_sim(sim_table)
    st.tl.eps(adata, n_perms=49, random_state=7, progress=False)
    first = adata.var["eps_pval"].to_numpy()
    st.tl.eps(adata, n_perms=49, random_state=7, progress=False)
    np.testing.assert_array_equal(adata.var["eps_pval"], first)

    graph, x = adata.obsp["image_connectivities"].toarray(), np.asarray(adata.X)
    c_obs = _naive_geary(graph, x)
    rng = np.random.default_rng(7)
    below = np.zeros(x.shape[1])
    for _ in range(49):
        below += _naive_geary(graph, x[rng.permutation(x.shape[0])]) <= c_obs
    np.testing.assert_allclose(first, (below + 1) / 50)
    assert adata.uns["stmorph"]["eps"]["eps"]["pvalues"] == "permutation"


def test_analytic_pvalues_follow_normality_null_and_bh_qvalues(sim_table):
    adata = _prepared_sim(sim_table)
    st.tl.eps(adata, pvalues="normality", progress=False)
    assert adata.uns["stmorph"]["eps"]["eps"]["pvalues"] == "normality"
    w = adata.obsp["image_connectivities"].toarray().astype(np.float64)
    n, s0 = w.shape[0], w.sum()
    s1 = ((w + w.T) ** 2).sum() / 2
    s2 = ((w.sum(0) + w.sum(1)) ** 2).sum()
    var_c = ((2 * s1 + s2) * (n - 1) - 4 * s0**2) / (2 * (n + 1) * s0**2)  # Cliff & Ord / PySAL esda
    c = np.exp(-adata.var["eps"].to_numpy())
    np.testing.assert_allclose(adata.var["eps_pval"], stats.norm.cdf((c - 1) / np.sqrt(var_c)), rtol=1e-8)
    p = adata.var["eps_pval"].to_numpy()
    order = np.argsort(p)
    bh = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    np.testing.assert_allclose(adata.var["eps_qval"].to_numpy()[order], np.minimum(bh, 1), rtol=1e-10)


def test_sparse_log1p_layer_is_not_densified_and_clip_reproduces_scaled_default(sim_table, monkeypatch):
    adata = _prepared_sim(sim_table)
    adata.layers["log1p"] = sparse.csr_matrix(adata.layers["log1p"])
    st.tl.eps(adata, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("sparse expression was densified")

    for cls in (sparse.csr_matrix, sparse.csc_matrix, sparse.coo_matrix, sparse.csr_array, sparse.csc_array):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    st.tl.eps(adata, layer="log1p", max_value=10, key_added="eps_clip", progress=False)
    st.tl.eps(adata, layer="log1p", key_added="eps_log1p", progress=False)
    monkeypatch.undo()
    np.testing.assert_allclose(adata.var["eps_clip"], adata.var["eps"], atol=1e-7)
    # without the clip, log1p equals the unclipped z-scores (shift/scale invariance)
    z = ad.AnnData(X=adata.layers["log1p"].toarray(), obs=adata.obs[[]], var=adata.var[[]])
    z.obsp["image_connectivities"] = adata.obsp["image_connectivities"]
    z.X = (z.X - z.X.mean(0)) / z.X.std(0, ddof=1)
    st.tl.eps(z, progress=False)
    np.testing.assert_allclose(adata.var["eps_log1p"], z.var["eps"], atol=1e-6)  # z computed in float32
    assert adata.uns["sps_eps_log1p"]["layer"] == "log1p"


def test_multiomics_any_representation_and_any_feature_matrix():
    # a protein panel embedding drives chromatin peaks (binary, sparse) in half of the features
    rng = np.random.default_rng(11)
    n = 300
    protein = rng.standard_normal((n, 4))
    logits = np.hstack([2.5 * protein[:, [i % 4]] for i in range(10)] + [np.zeros((n, 10))]) - 1.0
    peaks = sparse.csr_matrix(rng.random((n, 20)) < 1 / (1 + np.exp(-logits)), dtype=np.float32)
    adata = ad.AnnData(X=np.zeros((n, 20), dtype=np.float32), var=pd.DataFrame(index=[f"peak{i}" for i in range(20)]))
    adata.layers["peaks"] = peaks
    adata.obsm["X_protein"] = protein
    st.tl.eps(adata, use_rep="X_protein", layer="peaks", n_neighbors=10, progress=False)
    eps = adata.var["eps"].to_numpy()
    assert eps[:10].min() > eps[10:].max()
    assert (adata.var["eps_qval"][:10] < 0.05).all()
    assert adata.uns["image"]["params"]["use_rep"] == "X_protein"


def test_constant_genes_get_nan_and_one_warning_naming_how_many(sim_table):
    adata = _prepared_sim(sim_table)
    x = np.asarray(adata.X).copy()
    x[:, :3] = 1.5
    adata.X = x
    with pytest.warns(UserWarning, match="3 of 60 genes are constant") as record:
        st.tl.eps(adata, progress=False)
    assert sum("constant" in str(r.message) for r in record) == 1
    assert adata.var["eps"][:3].isna().all() and adata.var["eps_qval"][:3].isna().all()
    assert adata.uns["sps"]["n_genes"] == 57
    assert adata.uns["sps"]["sps"] == pytest.approx(adata.var["eps"][3:].mean())


def test_genes_subset_and_outputs_survive_h5ad(sim_table, tmp_path):
    adata = _prepared_sim(sim_table)
    genes = list(adata.var_names[:5])
    st.tl.eps(adata, genes=genes, progress=False)
    assert adata.var["eps"][5:].isna().all() and adata.var["eps"][:5].notna().all()
    path = tmp_path / "eps.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_series_equal(back.var["eps"], adata.var["eps"])
    assert back.uns["sps"]["n_genes"] == 5 and back.uns["stmorph"]["eps"]["eps"]["n_neighbors"] == 5


def test_sps_over_slices_matches_per_slice_eps_and_leaves_slices_unchanged(sim_sdata):
    slices = {}
    for i in range(3):
        a = st.datasets.simulate(150, 20, n_planted=4 * i, random_state=i).tables["table"]
        st.pp.prepare_expression(a)
        slices[f"s{i}"] = a
    before = {k: v.copy() for k, v in slices.items()}
    summary, table = st.tl.sps(slices, use_rep="latent")
    for name, a in slices.items():
        assert_adata_equal(a, before[name])
        single = a.copy()
        st.tl.eps(single, use_rep="latent", progress=False)
        row = summary.set_index("slice").loc[name]
        assert row["sps"] == pytest.approx(single.uns["sps"]["sps"])
        assert row["n_spots"] == 150 and row["n_genes"] == single.uns["sps"]["n_genes"]
        pd.testing.assert_series_equal(
            table[name].reindex(single.var_names), single.var["eps"], check_names=False, check_index=False
        )
    assert list(summary["slice"]) == ["s0", "s1", "s2"]
    assert summary.set_index("slice")["sps"].is_monotonic_increasing  # more planted genes → higher SPS
    listed, _ = st.tl.sps(list(slices.values()), use_rep="latent")
    assert list(listed["slice"]) == ["0", "1", "2"]


def test_sps_reads_the_tables_of_a_spatialdata(sim_sdata):
    from spatialdata import SpatialData

    tables = {}
    for i in range(2):
        a = st.datasets.simulate(120, 15, n_planted=3, random_state=10 + i).tables["table"]
        st.pp.prepare_expression(a)
        tables[f"slide{i}"] = a
    summary, table = st.tl.sps(SpatialData(tables=tables), use_rep="latent")
    assert list(summary["slice"]) == ["slide0", "slide1"]
    assert list(table.columns) == ["slide0", "slide1"]


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "match"),
    [
        (None, {"use_rep": "X_missing"}, KeyError, "X_missing"),
        ("nan", {"use_rep": "latent"}, ValueError, "non-finite"),
        (None, {"use_rep": "latent", "n_neighbors": 400}, ValueError, "at least 401 spots"),
        ("text", {"use_rep": "latent"}, ValueError, "numeric"),
        (None, {}, KeyError, "image_connectivities"),
    ],
    ids=["missing-rep", "nan-embedding", "too-few-spots", "non-numeric-X", "no-graph"],
)
def test_eps_bad_input_raises_and_leaves_adata_unchanged(sim_table, setup, kwargs, error, match):
    adata = sim_table
    if setup == "nan":
        adata.obsm["latent"][3, 1] = np.inf
    elif setup == "text":
        adata.X = np.full(adata.shape, "x", dtype=object)
    before = adata.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(error, match=match):
            st.tl.eps(adata, progress=False, **kwargs)
    assert_adata_equal(adata, before)


def test_graph_of_another_shape_is_rejected_naming_both_shapes():
    # AnnData itself refuses a wrongly shaped obsp entry, so this reaches the pure per-slice step
    with pytest.raises(ValueError, match=r"must be \(n_obs, n_obs\) = \(30, 30\); found \(31, 31\)"):
        compute_eps(_random_graph(31, seed=0), np.ones((30, 2)), pd.Index(["a", "b"]))


def test_compute_eps_is_pure_and_matches_definition():
    rng = np.random.default_rng(4)
    w = _random_graph(60, seed=5)
    x = rng.standard_normal((60, 6))
    result = compute_eps(w, x, pd.Index([f"g{i}" for i in range(6)]))
    np.testing.assert_allclose(result.eps, -np.log(_naive_geary(w.toarray(), x)), atol=1e-10)


def test_eps_reuses_a_stored_graph_built_from_the_same_representation(sim_table):
    adata = _prepared_sim(sim_table)
    stored = adata.obsp["image_connectivities"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilding would replace obsp keys, which warns
        st.tl.eps(adata, use_rep="latent", n_neighbors=5, progress=False)
    assert adata.obsp["image_connectivities"] is stored
    with pytest.warns(UserWarning, match="obsp\\['image_connectivities'\\]"):
        st.tl.eps(adata, use_rep="latent", n_neighbors=7, progress=False)
    assert adata.uns["image"]["params"]["n_neighbors"] == 7


def test_graph_built_by_eps_is_stored_exactly_as_image_graph_stores_it(sim_table):
    by_eps, by_graph = sim_table.copy(), sim_table.copy()
    st.pp.prepare_expression(by_eps)
    st.tl.eps(by_eps, use_rep="latent", n_neighbors=6, graph_key="img", progress=False)
    st.tl.image_graph(by_graph, "latent", n_neighbors=6, key_added="img", progress=False)
    for key in ("img_connectivities", "img_distances"):
        assert (by_eps.obsp[key] != by_graph.obsp[key]).nnz == 0
    assert by_eps.uns["img"] == by_graph.uns["img"]


def test_eps_records_live_under_their_tool_and_do_not_overwrite_other_tools(sim_table):
    adata = _prepared_sim(sim_table)
    predict_records = {"predicted_ridge": {"method": "ridge", "layer": "X"}}
    adata.uns["stmorph"]["predict"] = predict_records
    st.tl.eps(adata, key_added="predict", progress=False)
    st.tl.eps(adata, n_perms=9, progress=False)
    assert adata.uns["stmorph"]["predict"] == predict_records
    assert set(adata.uns["stmorph"]["eps"]) == {"predict", "eps"}
    assert adata.uns["stmorph"]["eps"]["predict"]["pvalues"] == "randomization"
    assert adata.uns["stmorph"]["eps"]["eps"]["pvalues"] == "permutation"
    assert eps_record(adata, "predict") == adata.uns["stmorph"]["eps"]["predict"]


def _esda_geary(x: np.ndarray, w) -> tuple[float, float, float]:
    import esda

    g = esda.Geary(x, w, transformation="B", permutations=0)
    return g.C, g.VC_rand, g.p_rand


@pytest.mark.parametrize("as_sparse", [False, True], ids=["scaled-X", "sparse-log1p"])
def test_randomization_null_matches_pysal_esda_on_a_real_section(data_dir, as_sparse):
    import libpysal

    adata, _ = _fixture_adata(data_dir, "C3")
    st.pp.prepare_expression(adata)
    layer = "log1p" if as_sparse else None
    if as_sparse:
        adata.layers["log1p"] = sparse.csr_matrix(adata.layers["log1p"])
    st.tl.eps(adata, use_rep="X_pixel", layer=layer, progress=False)
    assert adata.uns["stmorph"]["eps"]["eps"]["pvalues"] == "randomization"
    # the genes seen in fewest spots (heaviest tails) and a spread of the others
    detected = adata.var["eps_n_detected"].to_numpy()
    genes = np.unique(np.r_[np.argsort(detected, kind="stable")[:40], np.arange(0, adata.n_vars, 60)])
    w = libpysal.weights.WSP(adata.obsp["image_connectivities"]).to_W(silence_warnings=True)
    x = np.asarray(adata.layers["log1p"].toarray() if as_sparse else adata.X, dtype=np.float64)
    c_ref, var_ref, p_ref = np.array([_esda_geary(x[:, j], w) for j in genes]).T
    c = np.exp(-adata.var["eps"].to_numpy()[genes])
    np.testing.assert_allclose(c, c_ref, rtol=1e-10)
    s0, s1, s2 = st.tl._geary.graph_moments(adata.obsp["image_connectivities"])
    b2 = st.tl._geary.kurtosis(adata.layers["log1p"] if as_sparse else adata.X)[genes]
    np.testing.assert_allclose(st.tl._geary.randomization_variance(adata.n_obs, (s0, s1, s2), b2), var_ref, rtol=1e-10)
    # esda's p_rand is one-sided towards the observed side; ours always towards small C
    p = adata.var["eps_pval"].to_numpy()[genes]
    small = c < 1
    assert small.sum() > 20 and (~small).sum() > 20
    np.testing.assert_allclose(p[small], p_ref[small], rtol=1e-10)
    np.testing.assert_allclose(p[~small], 1 - p_ref[~small], rtol=1e-8)


@pytest.mark.parametrize("kind", ["dense", "sparse", "sparse-duplicates"])
def test_kurtosis_of_sparse_and_dense_input_equals_its_definition(kind):
    rng = np.random.default_rng(2)
    x = rng.poisson(0.3, size=(90, 7)).astype(np.float64) * rng.uniform(0.5, 3, 7)
    data = {"dense": x.astype(np.float32), "sparse": sparse.csr_matrix(x), "sparse-duplicates": _csr_with_duplicates(x)}
    dev = x - x.mean(0)
    expected = 90 * (dev**4).sum(0) / ((dev**2).sum(0)) ** 2
    np.testing.assert_allclose(st.tl._geary.kurtosis(data[kind]), expected, rtol=1e-6 if kind == "dense" else 1e-12)


def test_rare_gene_on_one_image_neighbourhood_is_tempered_by_the_randomization_null(sim_table):
    # a gene detected in 3 spots that happen to be image neighbours: one rare event, whose exact
    # permutation p-value is ~ (3 spots on one neighbourhood) / C(400, 3) ~ 1e-4-1e-5. Normality calls it
    # overwhelming; randomization much less so (still too small in this far tail: docs/methods/eps.md).
    adata = _prepared_sim(sim_table)
    graph = adata.obsp["image_connectivities"]
    trio = [0, *graph.indices[graph.indptr[0] : graph.indptr[0] + 2]]
    counts = sparse.csr_matrix(adata.layers["counts"]).toarray().astype(np.float32)
    counts[:, -1] = 0
    counts[trio, -1] = 5
    rare = ad.AnnData(X=counts, obs=adata.obs[[]], var=adata.var[[]])
    st.pp.prepare_expression(rare)
    rare.obsp["image_connectivities"] = graph
    gene = adata.var_names[-1]
    p = {}
    for null in ("randomization", "normality"):
        st.tl.eps(rare, pvalues=null, progress=False)
        p[null] = rare.var.loc[gene, "eps_pval"]
    assert rare.var.loc[gene, "eps_n_detected"] == 3
    assert p["normality"] < 1e-12
    assert p["randomization"] > 1e3 * p["normality"]


def test_n_detected_counts_nonzero_raw_counts_else_the_expression_used(sim_table):
    adata = _prepared_sim(sim_table)
    counts = sparse.csr_matrix(adata.layers["counts"]).toarray()
    st.tl.eps(adata, progress=False)
    np.testing.assert_array_equal(adata.var["eps_n_detected"], (counts > 0).sum(axis=0))
    # without a counts layer: the non-zero entries of the layer used (log1p is zero where counts are)
    del adata.layers["counts"]
    adata.layers["log1p"] = sparse.csr_matrix(adata.layers["log1p"])
    st.tl.eps(adata, layer="log1p", key_added="eps_log1p", progress=False)
    np.testing.assert_array_equal(adata.var["eps_log1p_n_detected"], (counts > 0).sum(axis=0))
    assert (adata.var["eps_log1p_n_detected"] < adata.n_obs).any()


def test_mask_var_defaults_to_highly_variable_and_none_scores_every_gene(sim_table):
    adata = _prepared_sim(sim_table)
    hvg = np.zeros(adata.n_vars, dtype=bool)
    hvg[::3] = True
    adata.var["highly_variable"] = hvg
    st.tl.eps(adata, progress=False)
    assert adata.var["eps"].notna().to_numpy().tolist() == hvg.tolist()
    assert adata.uns["sps"]["n_genes"] == hvg.sum()
    st.tl.eps(adata, mask_var=None, key_added="eps_all", progress=False)
    assert adata.var["eps_all"].notna().all()
    np.testing.assert_allclose(adata.var["eps"][hvg], adata.var["eps_all"][hvg])
    adata.var["mine"] = ~hvg
    st.tl.eps(adata, mask_var="mine", key_added="eps_mine", progress=False)
    assert adata.var["eps_mine"].notna().to_numpy().tolist() == (~hvg).tolist()
    st.tl.eps(adata, genes=list(adata.var_names[1:3]), key_added="eps_genes", progress=False)  # genes= wins
    assert adata.var["eps_genes"].notna().sum() == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pvalues": "analytic"}, InvalidParameterError, "pvalues must be one of"),
        ({"pvalues": 0.05}, InvalidParameterError, "pvalues must be one of"),
        ({"pvalues": "normality", "n_perms": 99}, InvalidParameterError, "applies to pvalues='permutation'"),
        ({"mask_var": "not_a_column"}, StmorphKeyError, "not_a_column"),
        ({"mask_var": "n_cells"}, InputTypeError, "boolean mask"),
        ({"mask_var": "nothing"}, InvalidParameterError, "selects no gene"),
        ({"mask_var": "highly_variable", "genes": ["g0"]}, InvalidParameterError, "not both"),
    ],
    ids=["unknown-null", "not-a-name", "perms-with-analytic", "missing-mask", "numeric-mask", "empty-mask", "both"],
)
def test_bad_pvalues_or_mask_var_raise_named_errors_and_leave_adata_unchanged(sim_table, kwargs, error, match):
    adata = _prepared_sim(sim_table)
    adata.var["nothing"] = False
    adata.var["highly_variable"] = True
    before = adata.copy()
    with pytest.raises(error, match=match):
        st.tl.eps(adata, progress=False, **kwargs)
    assert_adata_equal(adata, before)


def test_graph_stored_before_subsetting_the_spots_is_built_again(sim_table):
    st.tl.eps(sim_table, use_rep="latent", progress=False)
    subset = sim_table[: sim_table.n_obs // 2].copy()  # keeps only the edges among the kept spots
    assert (subset.obsp["image_connectivities"].getnnz(axis=1) < 5).any()
    fresh = subset.copy()
    del fresh.obsp["image_connectivities"], fresh.obsp["image_distances"], fresh.uns["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # replaced outputs
        st.tl.eps(subset, use_rep="latent", progress=False)
        st.tl.eps(fresh, use_rep="latent", progress=False)
    assert (subset.obsp["image_connectivities"].getnnz(axis=1) == 5).all()
    assert (subset.obsp["image_connectivities"] != fresh.obsp["image_connectivities"]).nnz == 0
    pd.testing.assert_series_equal(subset.var["eps"], fresh.var["eps"])
