"""``spatial_key=`` (as squidpy's): coordinates under another ``obsm`` key give the results of the default key."""

from __future__ import annotations

import numpy as np
import pytest

import stmorph as st
from stmorph.errors import StmorphKeyError


@pytest.fixture
def pair():
    """The same simulated slice twice: centres in ``obsm["spatial"]``, and moved to ``obsm["xy"]``."""
    sdata = st.datasets.simulate(144, 16, n_planted=4, n_smooth=2, spot_px=16, mpp=6.25, random_state=2)
    table = sdata.tables["table"]
    st.pp.prepare_expression(table)
    moved = table.copy()
    moved.obsm["xy"] = moved.obsm.pop("spatial")
    return table, moved


def test_eps_with_exclusion_reads_the_named_key(pair):
    table, moved = pair
    st.tl.eps(table, use_rep="latent_tile", exclude_radius=150.0, progress=False)
    with pytest.raises(StmorphKeyError, match=r"obsm\['spatial'\].*spatial_key="):
        st.tl.eps(moved.copy(), use_rep="latent_tile", exclude_radius=150.0, progress=False)
    st.tl.eps(moved, use_rep="latent_tile", exclude_radius=150.0, spatial_key="xy", progress=False)
    for column in ("eps", "eps_pval", "eps_spatial"):
        np.testing.assert_array_equal(moved.var[column], table.var[column])
    assert moved.uns["image"]["params"]["spatial_key"] == "xy"
    assert moved.uns["sps"]["adjacent_edge_fraction"] == table.uns["sps"]["adjacent_edge_fraction"]


def test_a_graph_built_on_other_coordinates_is_not_reused(pair):
    _, moved = pair
    moved.obsm["far"] = moved.obsm["xy"] * 10  # the same spots, ten times farther apart
    st.tl.image_graph(moved, "latent_tile", exclude_radius=150.0, spatial_key="xy")
    near = moved.obsp["image_connectivities"].copy()
    st.tl.eps(moved, use_rep="latent_tile", exclude_radius=150.0, spatial_key="far", progress=False)
    assert moved.uns["image"]["params"]["spatial_key"] == "far"
    assert (moved.obsp["image_connectivities"] != near).nnz > 0


def test_predict_context_reads_the_named_key(pair):
    table, moved = pair
    kwargs = {"method": "ridge", "use_rep": "latent", "split": 0.25, "context": True}
    st.tl.predict(table, **kwargs)
    st.tl.predict(moved, spatial_key="xy", **kwargs)
    np.testing.assert_array_equal(moved.layers["predicted_ridge"], table.layers["predicted_ridge"])
    with pytest.raises(StmorphKeyError, match=r"obsm\['spatial'\]"):
        st.tl.predict(moved.copy(), **kwargs)


def test_extract_patches_and_pl_spatial_read_the_named_key():
    sdata = st.datasets.simulate(16, 5, n_planted=2, spot_px=16, random_state=3)
    table = sdata.tables["table"]
    image = np.asarray(sdata.images["he"]).transpose(1, 2, 0)
    made = st.pp.extract_patches((image, table.obsm["spatial"]), mpp=1.0, patch_size=16, target_mpp=1.0,
                                 spatial_key="xy", progress=False)  # fmt: skip
    assert "spatial" not in made.obsm
    np.testing.assert_array_equal(made.obsm["xy"], table.obsm["spatial"])
    st.pp.extract_patches(sdata, patch_size=16, target_mpp=1.0, progress=False)
    shown = st.pl.spatial(sdata, "planted0", layers=["measured"], show=False)
    table.obsm["xy"] = table.obsm.pop("spatial")
    with pytest.raises(StmorphKeyError, match=r"obsm\['spatial'\]"):
        st.pl.spatial(sdata, "planted0", layers=["measured"], show=False)
    moved = st.pl.spatial(sdata, "planted0", layers=["measured"], spatial_key="xy", show=False)
    assert len(moved.axes) == len(shown.axes)
    np.testing.assert_array_equal(
        moved.axes[0].collections[0].get_offsets(), shown.axes[0].collections[0].get_offsets()
    )
