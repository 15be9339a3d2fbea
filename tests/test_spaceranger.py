"""Space Ranger folders read with spatialdata-io's own readers go through ``st.pp.extract_patches`` with no options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import stmorph as st
from stmorph._anndata import tool_record


def read_visium(folder, image_path):
    from spatialdata_io import visium

    return visium(folder, dataset_id="C2", fullres_image_file=image_path)


def read_visium_hd(folder, **kwargs):
    from spatialdata_io import visium_hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the reader warns about files the test does not write
        return visium_hd(folder, dataset_id="C2hd", load_segmentations_only=False, **kwargs)


@pytest.fixture(scope="module")
def c2_reference(her2st_sdata, c2_crop):
    """Default patches of the crop's spots cut through the HER2ST loader."""
    table = st.pp.extract_patches(her2st_sdata("C2"), copy=True, progress=False)
    return table[c2_crop[1].obs_names]


def test_visium_folder_needs_no_options_and_gives_the_her2st_patches(visium_folder, c2_reference):
    sdata = read_visium(*visium_folder)
    assert len(sdata.images) == 3  # full-resolution, hires and lowres
    st.pp.extract_patches(sdata, progress=False)
    table = sdata.tables["table"]
    record = tool_record(table, "patches", "patches")
    assert record["image_key"] == "C2_full_image"
    assert record["mpp_from"] == "visium_spot_circles"
    np.testing.assert_allclose(record["source_mpp"], c2_reference.uns["stmorph"]["patches"]["patches"]["source_mpp"])
    patches = table.obsm["patches"]
    assert patches.shape == c2_reference.obsm["patches"].shape
    np.testing.assert_array_equal(patches, c2_reference[table.obs_names].obsm["patches"])


@pytest.fixture(scope="module")
def c2_image(her2st_sdata):
    return np.moveaxis(np.asarray(her2st_sdata("C2").images["he"].data), 0, -1)


def _expected_bin_patches(table, crop, c2_image, **options):
    """The bins' patches cut from the HER2ST loader's image at the reader's own bin centres (crop → section px)."""
    centres = np.asarray(table.obsm["spatial"], dtype=np.float64) + crop.offset
    return st.pp.extract_patches((c2_image, centres), mpp=crop.mpp, progress=False, **options).obsm["patches"]


def test_visium_hd_folder_uses_16_um_bins_and_their_squares_by_default(visium_hd_folder, c2_crop, c2_image):
    sdata = read_visium_hd(visium_hd_folder)
    assert set(sdata.tables) == {"square_008um", "square_016um"}
    st.pp.extract_patches(sdata, progress=False)
    table = sdata.tables["square_016um"]
    record = tool_record(table, "patches", "patches")
    assert (record["table_key"], record["bin_size_um"], record["mpp_from"]) == (
        "square_016um",
        16,
        "visium_hd_bin_squares",
    )
    assert record["image_key"] == "C2hd_full_image"
    np.testing.assert_allclose(record["source_mpp"], c2_crop[0].mpp, rtol=1e-9)
    assert table.n_obs == (192 // 16) ** 2
    np.testing.assert_array_equal(table.obsm["patches"], _expected_bin_patches(table, c2_crop[0], c2_image))
    assert "patches" not in sdata.tables["square_008um"].obsm


def test_visium_hd_bin_size_selects_the_table(visium_hd_folder, c2_crop, c2_image):
    sdata = read_visium_hd(visium_hd_folder, bin_size=8)  # only the 8 µm table is read
    st.pp.extract_patches(sdata, bin_size=8, patch_size=32, progress=False)
    table = sdata.tables["square_008um"]
    assert tool_record(table, "patches", "patches")["bin_size_um"] == 8
    expected = _expected_bin_patches(table, c2_crop[0], c2_image, patch_size=32)
    np.testing.assert_array_equal(table.obsm["patches"], expected)


def _snapshot(sdata):
    return {key: table.copy() for key, table in sdata.tables.items()}


def _assert_unchanged(sdata, before):
    from _adata_compare import assert_adata_equal

    assert set(sdata.tables) == set(before)
    for key, table in sdata.tables.items():
        assert_adata_equal(table, before[key])


def test_absent_bin_size_is_an_error_listing_the_bins(visium_hd_folder):
    sdata = read_visium_hd(visium_hd_folder)
    before = _snapshot(sdata)
    with pytest.raises(st.errors.StmorphKeyError, match=r"no Visium HD table of 2 µm bins; bins present: 8 µm, 16 µm"):
        st.pp.extract_patches(sdata, bin_size=2, progress=False)
    _assert_unchanged(sdata, before)


def test_several_tables_without_a_choice_are_an_error(visium_folder):
    sdata = read_visium(*visium_folder)
    sdata.tables["other"] = sdata.tables["table"].copy()
    before = _snapshot(sdata)
    with pytest.raises(st.errors.StmorphKeyError, match=r"found 2 tables .*choose one with `table_key=`"):
        st.pp.extract_patches(sdata, progress=False)
    _assert_unchanged(sdata, before)
    st.pp.extract_patches(sdata, table_key="other", patch_size=16, progress=False)
    assert sdata.tables["other"].obsm["patches"].shape[1:] == (16, 16, 3)


def test_spots_of_neither_circles_nor_squares_without_a_pixel_size_are_an_error(visium_folder):
    from geopandas import GeoDataFrame
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    sdata = read_visium(*visium_folder)
    circles = sdata.shapes["C2"]
    discs = GeoDataFrame(geometry=circles.geometry.buffer(circles["radius"].to_numpy()), index=circles.index)
    sdata.shapes["C2"] = ShapesModel.parse(discs, transformations=get_transformation(circles, get_all=True))
    before = _snapshot(sdata)
    with pytest.raises(st.errors.InvalidParameterError, match=r"neither circles nor named bin squares.*Pass `mpp="):
        st.pp.extract_patches(sdata, progress=False)
    _assert_unchanged(sdata, before)
    st.pp.extract_patches(sdata, mpp=0.69, patch_size=16, progress=False)
    assert tool_record(sdata.tables["table"], "patches", "patches")["mpp_from"] == "mpp"


@pytest.mark.parametrize("layout", ["visium", "visium_hd"])
def test_extract_embed_eps_chain_runs_with_no_keys_or_sizes(layout, visium_folder, visium_hd_folder):
    sdata = read_visium(*visium_folder) if layout == "visium" else read_visium_hd(visium_hd_folder, bin_size=16)
    st.pp.extract_patches(sdata, progress=False)
    table = next(iter(sdata.tables.values()))
    st.tl.embed(table, progress=False)
    st.pp.prepare_expression(table)
    st.tl.eps(table, use_rep="X_default", progress=False)
    assert table.obsm["X_default"].shape[0] == table.n_obs
    assert np.isfinite(table.var["eps"]).sum() > 0.5 * table.n_vars
