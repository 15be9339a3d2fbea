"""st.pp.prepare_expression: the EPS paper's expression pipeline."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _adata_compare import assert_adata_equal
from scipy import sparse

import stmorph as st


def _counts_adata(counts, var_names, obs_names=None) -> ad.AnnData:
    obs = pd.DataFrame(index=obs_names if obs_names is not None else [f"s{i}" for i in range(counts.shape[0])])
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=var_names))


def _scanpy_reference(counts: np.ndarray, var_names, *, hvg: int | None) -> ad.AnnData:
    """The published steps written out with scanpy directly (expression_copilot.pp.process_omics)."""
    ref = _counts_adata(counts.copy(), var_names)
    sc.pp.filter_genes(ref, min_cells=3)
    sc.pp.filter_genes(ref, min_counts=3)
    if hvg is not None:
        sc.pp.highly_variable_genes(ref, n_top_genes=hvg, flavor="seurat_v3", subset=True)
    raw = ref.X.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    ref.layers["log1p"] = ref.X.copy()
    ref.layers["counts"] = raw
    sc.pp.scale(ref, max_value=10)
    return ref


@pytest.mark.parametrize("as_sparse", [False, True], ids=["dense", "sparse"])
def test_prepare_expression_reproduces_published_pipeline_on_real_section(her2st_adata, as_sparse):
    raw = her2st_adata("C2")
    counts = sparse.csr_matrix(raw.X).toarray().astype(np.int32)
    adata = _counts_adata(sparse.csr_matrix(counts) if as_sparse else counts, raw.var_names, raw.obs_names)
    st.pp.prepare_expression(adata)
    ref = _scanpy_reference(counts, raw.var_names, hvg=None)
    assert list(adata.var_names) == list(ref.var_names)
    np.testing.assert_allclose(adata.X, ref.X, atol=1e-5)
    np.testing.assert_allclose(sparse.csr_matrix(adata.layers["log1p"]).toarray(), ref.layers["log1p"], atol=1e-6)
    np.testing.assert_array_equal(sparse.csr_matrix(adata.layers["counts"]).toarray(), ref.layers["counts"])
    assert sparse.issparse(adata.layers["log1p"]) == as_sparse
    assert np.abs(adata.X).max() <= 10
    assert adata.uns["stmorph"]["prepare_expression"]["hvg"] is False


def test_prepare_expression_selects_seurat_v3_hvgs_when_more_spots_than_genes(sim_sdata):
    table = sim_sdata.tables["table"]
    counts = table.X.toarray()
    adata = _counts_adata(counts, table.var_names)
    st.pp.prepare_expression(adata, n_top_genes=20)
    ref = _scanpy_reference(counts, table.var_names, hvg=20)
    assert adata.n_vars == 20
    assert list(adata.var_names) == list(ref.var_names)
    assert adata.var["highly_variable"].all()
    np.testing.assert_allclose(adata.X, ref.X, atol=1e-5)


def test_prepare_expression_copy_leaves_input_unchanged(sim_table):
    before = sim_table.copy()
    out = st.pp.prepare_expression(sim_table, copy=True)
    assert_adata_equal(sim_table, before)
    assert out is not None and set(out.layers) == {"counts", "log1p"}


def test_prepare_expression_rejects_negative_or_non_numeric_counts(sim_table):
    bad = sim_table.copy()
    bad.X = bad.X.toarray().astype(float)
    bad.X[0, 0] = -1.0
    before = bad.copy()
    with pytest.raises(ValueError, match="non-negative"):
        st.pp.prepare_expression(bad)
    assert_adata_equal(bad, before)

    text = ad.AnnData(X=np.full((5, 3), "a", dtype=object))
    with pytest.raises(ValueError, match="numeric"):
        st.pp.prepare_expression(text)


def test_float16_counts_give_the_result_of_the_same_counts_in_float32(sim_table):
    counts = sim_table.X.toarray()
    assert counts.max() < 2048  # every count is exact in float16
    half = _counts_adata(counts.astype(np.float16), sim_table.var_names)
    single = _counts_adata(counts.astype(np.float32), sim_table.var_names)
    st.pp.prepare_expression(half)
    st.pp.prepare_expression(single)
    assert half.layers["counts"].dtype == np.float32
    assert_adata_equal(half, single)


@pytest.mark.parametrize("as_sparse", [False, True], ids=["dense", "sparse"])
def test_backed_anndata_is_refused_in_place_and_read_into_memory_with_copy(sim_table, tmp_path, as_sparse):
    counts = sim_table.X.toarray()
    path = tmp_path / "counts.h5ad"
    _counts_adata(sparse.csr_matrix(counts) if as_sparse else counts, sim_table.var_names).write_h5ad(path)
    written = path.read_bytes()
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(st.errors.InputTypeError, match=r"backed AnnData .*adata\.to_memory\(\)"):
        st.pp.prepare_expression(backed)
    out = st.pp.prepare_expression(backed, copy=True)
    expected = st.pp.prepare_expression(ad.read_h5ad(path), copy=True)
    assert not out.isbacked
    assert_adata_equal(out, expected)
    backed.file.close()
    assert path.read_bytes() == written
