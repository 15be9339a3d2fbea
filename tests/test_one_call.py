"""`st.tl.eps(adata)` as one call after extract_patches + embed, and every st.tl function on a SpatialData."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph.errors import InvalidParameterError, StmorphKeyError

PATCHES = {"target_mpp": 4.0, "patch_size": 16}


@pytest.fixture
def embedded():
    """A simulated SpatialData with patches and the (torch-free) ``hed`` embedding in its table."""
    sdata = st.datasets.simulate(150, 20, n_planted=4, random_state=3, spot_px=24)
    st.pp.extract_patches(sdata, progress=False, **PATCHES)
    st.tl.embed(sdata, model="hed", progress=False)
    st.pp.prepare_expression(sdata.tables["table"])
    return sdata


def test_eps_without_arguments_uses_the_embedding_embed_recorded(embedded, caplog):
    table = embedded.tables["table"]
    explicit = table.copy()
    st.tl.eps(explicit, use_rep="X_hed", progress=False)
    with caplog.at_level(logging.INFO, logger="stmorph"):
        st.tl.eps(table, progress=False)
    assert "obsm['X_hed']" in caplog.text
    np.testing.assert_array_equal(table.var["eps"], explicit.var["eps"])
    assert table.uns["image"]["params"]["use_rep"] == "X_hed"


def test_eps_without_arguments_takes_the_most_recent_embedding(embedded):
    table = embedded.tables["table"]
    st.tl.embed(table, model=lambda_encoder(), key_added="X_other", progress=False)
    st.tl.eps(table, progress=False)
    assert table.uns["image"]["params"]["use_rep"] == "X_other"
    st.tl.embed(table, model="hed", progress=False)  # X_hed again: now the most recent
    st.tl.eps(table, progress=False, graph_key="again")
    assert table.uns["again"]["params"]["use_rep"] == "X_hed"


def lambda_encoder() -> str:
    """Register (once) a tiny torch-free encoder: the mean colour of each patch."""
    name = "mean_colour_test"
    if name not in st.tl.list_encoders():
        st.tl.register_encoder(name, lambda patches: patches.reshape(len(patches), -1, 3).mean(axis=1))
    return name


def test_eps_with_neither_embedding_nor_graph_names_the_calls_to_run(sim_table):
    st.pp.prepare_expression(sim_table)
    before = sim_table.copy()
    with pytest.raises(StmorphKeyError, match=r"st\.pp\.extract_patches.*st\.tl\.embed"):
        st.tl.eps(sim_table, progress=False)
    assert_adata_equal(sim_table, before)


def test_a_stored_graph_still_wins_over_the_recorded_embedding(embedded):
    table = embedded.tables["table"]
    st.tl.image_graph(table, "latent", n_neighbors=4, progress=False)
    st.tl.eps(table, progress=False)
    assert table.uns["image"]["params"]["use_rep"] == "latent"
    assert table.uns["stmorph"]["eps"]["eps"]["n_neighbors"] == 4


def test_every_tool_takes_a_spatialdata_and_writes_into_its_table(embedded):
    plain = embedded.tables["table"].copy()
    st.tl.image_graph(embedded, "X_hed", progress=False)
    st.tl.eps(embedded, progress=False)
    st.tl.image_graph(plain, "X_hed", progress=False)
    st.tl.eps(plain, progress=False)
    table = embedded.tables["table"]
    np.testing.assert_array_equal(table.var["eps"], plain.var["eps"])
    assert (table.obsp["image_connectivities"] != plain.obsp["image_connectivities"]).nnz == 0

    reference = st.datasets.simulate(150, 20, n_planted=4, random_state=4, spot_px=24)
    st.pp.extract_patches(reference, progress=False, **PATCHES)
    st.tl.embed(reference, model="hed", progress=False)
    st.pp.prepare_expression(reference.tables["table"])
    st.tl.predict(embedded, reference, method="ridge", use_rep="X_hed", progress=False)
    st.tl.predict(plain, reference.tables["table"], method="ridge", use_rep="X_hed", progress=False)
    np.testing.assert_allclose(table.layers["predicted_ridge"], plain.layers["predicted_ridge"])
    st.tl.evaluate(embedded, "predicted_ridge", n_top=5)
    assert table.var["pearson_ridge"].notna().any()
    assert st.tl.evaluate(embedded, "predicted_ridge", n_top=5, inplace=False).index.tolist() == ["ridge"]


def test_table_key_chooses_among_tables_and_is_refused_for_an_anndata(embedded):
    table = embedded.tables["table"]
    embedded.tables["second"] = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    before = table.copy()
    with pytest.raises(StmorphKeyError, match="2 tables"):
        st.tl.eps(embedded, progress=False)
    with pytest.raises(StmorphKeyError, match="'missing' not found"):
        st.tl.eps(embedded, table_key="missing", progress=False)
    with pytest.raises(InvalidParameterError, match="applies to a SpatialData"):
        st.tl.eps(table, table_key="table", progress=False)
    assert_adata_equal(table, before)
    st.tl.eps(embedded, table_key="table", progress=False)
    assert table.var["eps"].notna().any()


def test_copy_of_a_spatialdata_returns_the_new_table_and_leaves_the_slide_unchanged(embedded):
    before = embedded.tables["table"].copy()
    out = st.tl.eps(embedded, copy=True, progress=False)
    assert isinstance(out, ad.AnnData) and out.var["eps"].notna().any()
    assert_adata_equal(embedded.tables["table"], before)


def test_real_section_goes_from_patches_to_eps_with_no_keys(her2st_sdata):
    sdata = her2st_sdata("C3")
    table = st.pp.extract_patches(sdata, progress=False, copy=True)
    st.tl.embed(table, model="hed", progress=False)
    st.pp.prepare_expression(table)
    st.tl.eps(table, progress=False)
    assert table.uns["image"]["params"]["use_rep"] == "X_hed"
    assert table.uns["sps"]["sps"] > 0
    assert table.var["eps_n_detected"].max() <= table.n_obs
