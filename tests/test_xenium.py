"""Xenium folders with their post-run H&E, read by spatialdata-io's own reader, go through stmorph with no options.

The folder is written from a crop of the shipped HER2ST section C2 (``tests/_xenium.py``): the crop's
pixels are the H&E, rotated and scaled onto the Xenium frame by a known alignment; cells lie inside
the HER2ST spots. Expected patches are cut from the crop with ``(image, centres)`` at centres the
test maps itself, never through the Xenium path.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from _spaceranger import Crop
from _xenium import XENIUM_PIXEL_UM, apply, read_xenium, write_xenium

import stmorph as st
from stmorph._anndata import tool_record
from stmorph.errors import AlignmentError, InputTypeError, InvalidParameterError, OutOfImageError, StmorphKeyError

X0, Y0, SIDE = 6500, 5600, 1200
"""The window of HER2ST C2 (section pixels) that becomes the Xenium H&E: 16 spots."""


@pytest.fixture(scope="module")
def xenium_crop(her2st_sdata):
    """``(crop, spots)``: the C2 window and the spots whose cells and 48 µm cell patches lie inside it."""
    sdata = her2st_sdata("C2")
    image = np.moveaxis(np.asarray(sdata.images["he"].data), 0, -1)
    table = sdata.tables["table"]
    crop = Crop(image[Y0 : Y0 + SIDE, X0 : X0 + SIDE].copy(), X0, Y0, st._anndata.dataset_info(table)["mpp"])
    margin = (40 + 24) / crop.mpp + 8  # cell offset in the spot + half a cell patch + the filter's reach
    return crop, table[crop.inside(table.obsm["spatial"], margin)].copy()


@pytest.fixture(scope="module")
def xenium_folder(tmp_path_factory, xenium_crop):
    """``(folder, truth)``: a Xenium output folder of the crop and what the test knows of it."""
    folder = tmp_path_factory.mktemp("xenium") / "C2"
    return folder, write_xenium(folder, *xenium_crop)


def _cut(crop: Crop, centres: np.ndarray, **options) -> np.ndarray:
    return st.pp.extract_patches((crop.image, centres), mpp=crop.mpp, progress=False, **options).obsm["patches"]


def test_xenium_cells_need_no_options_and_give_the_patches_of_the_known_alignment(xenium_folder, xenium_crop):
    folder, truth = xenium_folder
    sdata = read_xenium(folder)
    assert set(sdata.images) == {"he_image", "morphology_focus"}
    st.pp.extract_patches(sdata, progress=False)
    table = sdata.tables["table"]
    record = tool_record(table, "patches", "patches")
    assert (record["image_key"], record["mpp_from"], record["unit"]) == ("he_image", "xenium_alignment", "cells")
    np.testing.assert_allclose(record["source_mpp"], xenium_crop[0].mpp, rtol=1e-9)
    assert record["tile_um"] == pytest.approx(48.0)
    np.testing.assert_array_equal(table.obs_names, truth.cell_ids)
    expected = _cut(xenium_crop[0], truth.cells_he, patch_um=48.0)
    np.testing.assert_array_equal(table.obsm["patches"], expected)


def test_xenium_is_recognised_by_its_cell_table_without_the_reader_mark(xenium_folder, xenium_crop):
    folder, truth = xenium_folder
    sdata = read_xenium(folder)
    del sdata.attrs["spatialdata_io_reader"]
    table = st.pp.extract_patches(sdata, patch_um=64.0, patch_size=96, progress=False, copy=True)  # level 0
    np.testing.assert_array_equal(
        table.obsm["patches"], _cut(xenium_crop[0], truth.cells_he, patch_um=64.0, patch_size=96)
    )


def test_xenium_dapi_morphology_image_is_refused_as_the_he(xenium_folder):
    sdata = read_xenium(xenium_folder[0])
    with pytest.raises(InputTypeError, match="DAPI"):
        st.pp.extract_patches(sdata, image_key="morphology_focus", progress=False)
    assert "patches" not in sdata.tables["table"].obsm


def test_circles_of_several_radii_are_not_read_as_55_um_visium_spots(xenium_folder):
    """The old silent failure: cell circles taken for Visium spots gave a wrong pixel size and 22 px windows."""
    from spatialdata import SpatialData

    sdata = read_xenium(xenium_folder[0])
    table = sdata.tables["table"].copy()
    table.uns["spatialdata_attrs"]["region"] = "cells"
    table.obs["region"] = table.obs["region"].cat.rename_categories(["cells"])
    images, shapes = {"he_image": sdata.images["he_image"]}, {"cells": sdata.shapes["cell_circles"]}
    plain = SpatialData(images=images, shapes=shapes, tables={"t": table})
    with pytest.raises(InvalidParameterError, match="pixel size"):
        st.pp.extract_patches(plain, progress=False)


def _hest_grid(cells_he: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray]:
    """HEST-1k's ``pool_transcripts_xenium`` grid on points in H&E pixels: per point ``(row, col)``, and the
    centre of each square, written as in HEST (columns from x, rows from y, origin at the minima)."""
    x_min, y_min = cells_he[:, 0].min(), cells_he[:, 1].min()
    col = np.floor((cells_he[:, 0] - x_min) / side).astype(int)
    row = np.floor((cells_he[:, 1] - y_min) / side).astype(int)
    return np.column_stack([row, col]), np.array([x_min + side / 2, y_min + side / 2])


def test_pseudo_spots_pool_the_cells_on_hest_grid_and_patches_are_cut_around_them(xenium_folder, xenium_crop):
    folder, truth = xenium_folder
    crop = xenium_crop[0]
    sdata = read_xenium(folder)
    st.pp.pseudo_spots(sdata, size_um=100)
    spots = sdata.tables["pseudo_spots_100um"]
    side = 100 / crop.mpp
    rowcol, first_centre = _hest_grid(truth.cells_he, side)
    names = np.array([f"{r:03d}x{c:03d}" for r, c in rowcol])
    assert set(spots.obs_names) == set(names)
    counts = truth.counts.toarray()
    for name in spots.obs_names[:: max(1, spots.n_obs // 6)]:
        members = names == name
        assert spots.obs.loc[name, "n_cells"] == members.sum()
        np.testing.assert_array_equal(np.asarray(spots[name].X.todense()).ravel(), counts[members].sum(axis=0))
    assert spots.obs["n_cells"].sum() == len(truth.cells_he)
    assert (spots.obs["area_um2"] == 100.0**2).all()
    centres_he = first_centre + spots.obs[["array_col", "array_row"]].to_numpy() * side
    centres_um = apply(truth.alignment, centres_he) * XENIUM_PIXEL_UM
    np.testing.assert_allclose(spots.obsm["spatial"], centres_um, rtol=0, atol=1e-6)
    st.pp.extract_patches(sdata, table_key="pseudo_spots_100um", progress=False)
    record = tool_record(spots, "patches", "patches")
    assert (record["unit"], record["tile_um"]) == ("pseudo_spots", pytest.approx(112.0))
    np.testing.assert_array_equal(spots.obsm["patches"], _cut(crop, centres_he))


def _drawn_circles(fig) -> tuple[np.ndarray, np.ndarray]:
    """Centres and diameters of the circles scanpy drew in the first panel (image pixels at the drawn scale)."""
    ax = next(a for a in fig.axes if a.get_title())
    paths = ax.collections[0].get_paths()
    boxes = np.array([[p.vertices.min(axis=0), p.vertices.max(axis=0)] for p in paths])
    return boxes.mean(axis=1), boxes[:, 1, 0] - boxes[:, 0, 0]


def test_spatial_plot_draws_cells_and_pseudo_spots_where_the_alignment_puts_them(xenium_folder, xenium_crop):
    from scipy.spatial import cKDTree

    folder, truth = xenium_folder
    mpp = xenium_crop[0].mpp
    sdata = read_xenium(folder)
    gene = sdata.tables["table"].var_names[0]
    # the crop is 1200 px: drawn at full resolution, so drawn pixels are H&E pixels
    fig = st.pl.spatial(sdata, gene, layers=["measured"], max_image_side=2000, show=False)
    centres, diameters = _drawn_circles(fig)
    distance, nearest = cKDTree(truth.cells_he).query(centres)
    assert distance.max() < 0.01 and len(set(nearest)) == len(truth.cells_he)  # every cell once, at its place
    np.testing.assert_allclose(diameters, 10.0 / mpp, rtol=1e-6)  # a 10 µm cell
    st.pp.pseudo_spots(sdata, size_um=100)
    spots = sdata.tables["pseudo_spots_100um"]
    fig = st.pl.spatial(
        sdata, gene, layers=["measured"], table_key="pseudo_spots_100um", max_image_side=2000, show=False
    )
    centres, diameters = _drawn_circles(fig)
    expected = apply(np.linalg.inv(truth.alignment), spots.obsm["spatial"] / XENIUM_PIXEL_UM)
    assert cKDTree(expected).query(centres)[0].max() < 0.01
    np.testing.assert_allclose(diameters, 100.0 / mpp, rtol=1e-6)
    plt.close("all")


def test_xenium_lazy_patches_read_back_the_memory_patches(xenium_folder, tmp_path):
    from spatialdata import read_zarr

    sdata = read_xenium(xenium_folder[0])
    sdata.write(tmp_path / "xenium.zarr")
    sdata = read_zarr(tmp_path / "xenium.zarr")
    st.pp.extract_patches(sdata, patch_size=32, store="lazy", progress=False)
    table = sdata.tables["table"]
    reader = st.pp.patch_reader(table)
    memory = st.pp.extract_patches(sdata, patch_size=32, progress=False, copy=True).obsm["patches"]
    np.testing.assert_array_equal(reader.read(np.arange(table.n_obs)), memory)


def test_xenium_extract_embed_eps_end_to_end(xenium_folder):
    from stmorph.tl._spatial import spatial_um

    sdata = read_xenium(xenium_folder[0])
    st.pp.extract_patches(sdata, patch_size=64, progress=False)
    table = sdata.tables["table"]
    np.testing.assert_array_equal(spatial_um(table), table.obsm["spatial"])  # the cells' µm, not H&E pixels
    st.tl.embed(table, model="hed", progress=False)
    st.pp.prepare_expression(table)
    st.tl.eps(table, use_rep="X_hed", exclude_radius=48.0)
    eps = table.var["eps"].to_numpy()
    assert np.isfinite(eps).sum() >= 0.9 * table.n_vars
    assert np.isfinite(table.uns["sps"]["sps"])
    null = table.copy()  # null: each cell's expression given another cell's patch
    null.X = null.X[np.random.default_rng(0).permutation(null.n_obs)]
    st.tl.eps(null, use_rep="X_hed", exclude_radius=48.0)
    pval = null.var["eps_pval"].dropna().to_numpy()
    assert len(pval) >= 0.9 * null.n_vars and np.mean(pval < 0.05) <= 0.2
    assert abs(null.uns["sps"]["sps"]) < 0.05


def test_xenium_he_without_alignment_file_is_refused(xenium_crop, tmp_path):
    write_xenium(tmp_path / "C2", *xenium_crop, per_spot=2, alignment=False)
    sdata = read_xenium(tmp_path / "C2")
    with pytest.raises(AlignmentError, match="alignment"):
        st.pp.extract_patches(sdata, progress=False)
    with pytest.raises(AlignmentError):
        st.pp.pseudo_spots(sdata)
    assert set(sdata.tables) == {"table"} and "cell_circles" in sdata.shapes and len(sdata.shapes) == 1


def test_alignment_placing_cells_off_the_he_says_how_many(xenium_folder):
    from spatialdata.transformations import Affine, set_transformation

    folder, truth = xenium_folder
    sdata = read_xenium(folder)
    shifted = truth.alignment.copy()
    shifted[0, 2] += 600 * truth.alignment[0, 0]  # the H&E 600 px further right: cells left of x=600 fall off
    set_transformation(sdata.images["he_image"], Affine(shifted, ("x", "y"), ("x", "y")), "global")
    outside = int((truth.cells_he[:, 0] - 600 < 0).sum())
    assert 0 < outside < len(truth.cells_he)
    with pytest.raises(OutOfImageError, match=f"{outside} of {len(truth.cells_he)} spot centres"):
        st.pp.extract_patches(sdata, progress=False)
    assert "patches" not in sdata.tables["table"].obsm


def test_xenium_without_a_cell_table_is_refused(xenium_folder):
    sdata = read_xenium(xenium_folder[0], cells_as_circles=False, cells_table=False)
    assert not sdata.tables
    with pytest.raises(StmorphKeyError, match="no table of cells"):
        st.pp.extract_patches(sdata, progress=False)
    with pytest.raises(StmorphKeyError, match="no table of cells"):
        st.pp.pseudo_spots(sdata)


def test_pseudo_spot_smaller_than_a_pixel_is_refused_and_writes_nothing(xenium_folder):
    sdata = read_xenium(xenium_folder[0])
    with pytest.raises(InvalidParameterError, match="smaller than one pixel"):
        st.pp.pseudo_spots(sdata, size_um=0.5)
    assert set(sdata.tables) == {"table"} and set(sdata.shapes) == {"cell_circles"}


def test_pseudo_spots_inplace_false_returns_the_table_and_writes_nothing():
    sdata = st.datasets.simulate_xenium(300, random_state=1)
    spots = st.pp.pseudo_spots(sdata, size_um=50, inplace=False)
    assert spots.obs["n_cells"].sum() == 300 and set(sdata.tables) == {"table"}
    assert tool_record(spots, "pseudo_spots", "pseudo_spots_50um")["size_um"] == 50.0


def _embedded_cells(random_state: int):
    sdata = st.datasets.simulate_xenium(400, random_state=random_state)
    st.pp.extract_patches(sdata, patch_size=64, progress=False)
    table = sdata.tables["table"]
    st.tl.embed(table, model="hed", progress=False)
    st.pp.prepare_expression(table)
    return table


def test_prediction_on_xenium_cells_recovers_the_genes_the_he_shows_and_nothing_from_shuffled_pairs():
    reference, query = _embedded_cells(0), _embedded_cells(1)
    shuffled = reference.copy()  # null: each reference cell's expression given another cell's patch
    shuffled.X = shuffled.X[np.random.default_rng(0).permutation(shuffled.n_obs)]
    scores = {}
    for name, ref in {"paired": reference, "shuffled": shuffled}.items():
        target = query.copy()
        st.tl.predict(target, [ref], method="knn", use_rep="X_hed", progress=False)
        st.tl.evaluate(target, "predicted_knn")
        scores[name] = target.var["pearson_knn"].groupby(target.var["planted"]).mean()
    # genes drawn from the H&E are predicted across slides, genes the H&E does not show are not
    assert scores["paired"]["image"] > 0.4 > scores["paired"]["spatial"] + 0.2
    assert abs(scores["shuffled"]["image"]) < 0.2
