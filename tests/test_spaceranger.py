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
