"""The full pipeline's outputs survive write_h5ad/read_h5ad and SpatialData write/read_zarr unchanged."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pytest
import spatialdata
from _adata_compare import assert_adata_equal

import stmorph as st
from stmorph._anndata import dataset_info

_SCALARS = (str, bool, int, float, np.integer, np.floating, np.bool_)


def _assert_serialisable(value, where: str = "uns") -> None:
    """Fail unless ``value`` holds only what h5ad/zarr store natively (no None, no objects)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r} is not a str"
            _assert_serialisable(item, f"{where}[{key!r}]")
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            assert all(isinstance(v, str) for v in value.ravel()), f"{where}: object array of non-str"
        else:
            assert value.dtype.kind in "biufUS", f"{where}: dtype {value.dtype}"
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            assert isinstance(item, _SCALARS), f"{where}[{i}] is a {type(item).__name__}"
    else:
        assert isinstance(value, _SCALARS), f"{where} is a {type(value).__name__} ({value!r})"


@pytest.fixture(scope="module")
def pipeline():
    """patches → embed (hed) → prepare_expression → eps → predict (ridge, bleep) → evaluate, on a small slice."""
    sdata = st.datasets.simulate(96, 24, n_planted=6, random_state=1, spot_px=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.pp.extract_patches(sdata, patch_size=32, progress=False)
        table = sdata.tables["table"]
        st.tl.embed(table, model="hed", progress=False)
        st.pp.prepare_expression(table)
        st.tl.eps(table, use_rep="X_hed", n_perms=20, progress=False)
        st.tl.predict(table, method="ridge", use_rep="X_hed", split=0.25, progress=False)
        st.tl.predict(table, method="bleep", use_rep="X_hed", split=0.25, epochs=1, progress=False)
        st.tl.evaluate(table, "predicted_ridge", n_top=5)
        st.tl.evaluate(table, "predicted_bleep", n_top=5)
    sdata.tables["table"] = table
    return sdata, table


def test_pipeline_wrote_every_stmorph_output(pipeline):
    _, table = pipeline
    assert {"patches", "X_hed"} <= set(table.obsm)
    assert {"predicted_ridge", "predicted_bleep", "counts", "log1p"} <= set(table.layers)
    assert {"eps", "eps_pval", "eps_qval", "pearson_ridge", "ssim_bleep"} <= set(table.var)
    assert {"image_connectivities", "image_distances"} <= set(table.obsp)
    assert {"patches", "embed", "eps", "prepare_expression", "predict", "evaluate"} <= set(table.uns["stmorph"])


def test_uns_follows_one_layout_tool_then_key(pipeline):
    _, table = pipeline
    root = table.uns["stmorph"]
    planted = {"n_planted": 6, "n_factors": 3, "effect": 1.0, "random_state": 1}  # the arguments of simulate above
    assert root["dataset"] == {"name": "simulate", "mpp": 1.0, "params": planted}
    for tool in ("patches", "embed", "eps", "predict", "evaluate"):
        assert all(isinstance(record, Mapping) for record in root[tool].values()), tool
    assert set(root["eps"]) == {"eps"}
    assert set(root["predict"]) == {"predicted_ridge", "predicted_bleep"}


def test_dataset_metadata_survives_the_round_trip(pipeline, tmp_path):
    _, table = pipeline
    table.write_h5ad(tmp_path / "new.h5ad")
    assert dataset_info(ad.read_h5ad(tmp_path / "new.h5ad"))["mpp"] == 1.0
    assert dataset_info(ad.AnnData(np.ones((2, 2)))) == {}


def test_uns_holds_only_serialisable_types(pipeline):
    _, table = pipeline
    _assert_serialisable(dict(table.uns))


def test_h5ad_roundtrip_keeps_every_output(pipeline, tmp_path):
    _, table = pipeline
    table.write_h5ad(tmp_path / "slice.h5ad")
    back = ad.read_h5ad(tmp_path / "slice.h5ad")
    assert_adata_equal(back, table)


def test_spatialdata_zarr_roundtrip_keeps_every_output(pipeline, tmp_path):
    sdata, table = pipeline
    sdata.write(tmp_path / "slice.zarr")
    back = spatialdata.read_zarr(tmp_path / "slice.zarr")
    assert_adata_equal(back.tables["table"], table)
    np.testing.assert_array_equal(np.asarray(back.images["he"]), np.asarray(sdata.images["he"]))


def test_results_computed_after_a_roundtrip_match(pipeline, tmp_path):
    """A read-back slice is as good as the original: EPS recomputed on it is identical."""
    _, table = pipeline
    table.write_h5ad(tmp_path / "slice.h5ad")
    back = ad.read_h5ad(tmp_path / "slice.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st.tl.eps(back, use_rep="X_hed", n_perms=20, key_added="eps_again", progress=False)
    np.testing.assert_array_equal(back.var["eps_again"], table.var["eps"])
