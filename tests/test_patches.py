"""st.pp.extract_patches on the shipped HER2ST data and on small synthetic images."""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pytest
from _adata_compare import assert_adata_equal
from skimage.transform import resize

import stmorph as st
from stmorph.errors import InputTypeError, InvalidParameterError, OutOfImageError, StmorphKeyError
from stmorph.pp import patch_reader
from stmorph.pp._windows import read_patches


@pytest.fixture(scope="module")
def c2(her2st_sdata):
    """C2 SpatialData and its image as a (y, x, c) numpy array."""
    sdata = her2st_sdata("C2")
    return sdata, np.moveaxis(np.asarray(sdata.images["he"].data), 0, -1)


@pytest.fixture(scope="module")
def c2_default(c2):
    """Table copy with default patches (0.5 µm/px, 224 px)."""
    return st.pp.extract_patches(c2[0], copy=True, progress=False)


def _crop(image: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    x0, y0 = round(x - size / 2), round(y - size / 2)
    return image[y0 : y0 + size, x0 : x0 + size]


def test_patch_pixels_equal_the_image_crop_at_the_spot(c2):
    sdata, image = c2
    mpp = sdata.tables["table"].uns["stmorph"]["dataset"]["mpp"]
    table = st.pp.extract_patches(sdata, target_mpp=mpp, patch_size=96, copy=True, progress=False)
    xy = sdata.tables["table"].obsm["spatial"]  # x = column, y = row
    for i in (0, 50, 186):
        assert np.array_equal(table.obsm["patches"][i], _crop(image, xy[i, 0], xy[i, 1], 96))
    # the orientation matters: swapping x and y gives another crop
    assert not np.array_equal(table.obsm["patches"][0], _crop(image, xy[0, 1], xy[0, 0], 96))
    assert table.obs["patch_complete"].all()


def test_default_tile_is_112_um_wide_and_resamples_the_crop(c2, c2_default):
    sdata, image = c2
    params = c2_default.uns["stmorph"]["patches"]["patches"]
    mpp = sdata.tables["table"].uns["stmorph"]["dataset"]["mpp"]
    assert params["window_px"] * mpp == pytest.approx(112.0)
    assert params["tile_um"] == pytest.approx(112.0)
    assert c2_default.obsm["patches"].shape == (187, 224, 224, 3)
    assert c2_default.obsm["patches"].dtype == np.uint8
    x, y = sdata.tables["table"].obsm["spatial"][10]
    window = round(112 / mpp)
    expected = resize(_crop(image, x, y, window), (224, 224), order=1, anti_aliasing=False, preserve_range=True)
    diff = np.abs(c2_default.obsm["patches"][10].astype(float) - expected)
    assert diff.mean() < 6  # same place and scale; only the interpolation filter and <1 px rounding differ


def test_tissue_spots_are_not_background(c2, c2_default):
    _, image = c2
    tissue = c2_default.obs["in_tissue"].to_numpy() == 1
    grey = c2_default.obsm["patches"][tissue].mean(axis=-1)
    white_fraction = (grey > 220).mean(axis=(1, 2))
    assert np.median(white_fraction) < 0.3
    corner = read_patches(image, np.array([[112.0, 112.0]]), 224, 224)[0][0]  # slide background
    assert (corner.mean(axis=-1) > 200).mean() > 0.9


def test_visium_anndata_gives_the_same_patches_as_spatialdata(her2st_adata, c2_default):
    adata = her2st_adata("C2").copy()
    assert st.pp.extract_patches(adata, progress=False) is None  # in place
    assert np.array_equal(adata.obsm["patches"], c2_default.obsm["patches"])
    assert adata.uns["stmorph"]["patches"]["patches"]["image"] == "fullres"


def test_in_place_returns_none_and_copy_returns_a_new_table_leaving_the_spatialdata_unchanged():
    sdata = st.datasets.simulate(12, 5, n_planted=2, random_state=4)
    kwargs = {"target_mpp": 3.5, "patch_size": 16, "progress": False}
    copied = st.pp.extract_patches(sdata, copy=True, **kwargs)
    assert "patches" not in sdata.tables["table"].obsm and "patches" in copied.obsm
    assert copied is not sdata.tables["table"] and copied.n_obs == 12
    assert st.pp.extract_patches(sdata, **kwargs) is None
    np.testing.assert_array_equal(sdata.tables["table"].obsm["patches"], copied.obsm["patches"])
    # a plain (image, coordinates) pair has no table to write into: the new table is returned either way
    image, coords = np.zeros((40, 40, 3), np.uint8), np.array([[20.0, 20.0]])
    for copy in (False, True):
        pair = st.pp.extract_patches((image, coords), mpp=1.0, patch_size=8, target_mpp=1.0, copy=copy, progress=False)
        assert pair.obsm["patches"].shape == (1, 8, 8, 3)


def test_visium_without_full_resolution_file_uses_the_hires_image(her2st_adata, c2_default):
    adata = her2st_adata("C2").copy()
    lib = adata.uns["spatial"]["C2"]
    lib["metadata"] = {"source_image_path": "/nonexistent/image.jpg"}
    st.pp.extract_patches(adata, progress=False)
    params = adata.uns["stmorph"]["patches"]["patches"]
    assert params["image"] == "hires"
    assert params["image_mpp"] == pytest.approx(
        lib["scalefactors"]["microns_per_pixel"] / lib["scalefactors"]["tissue_hires_scalef"]
    )
    a = adata.obsm["patches"].astype(float).ravel()
    b = c2_default.obsm["patches"].astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9  # same tiles, blurrier source


def test_visium_pixel_size_falls_back_to_the_55_um_spot_diameter():
    image = np.zeros((200, 200, 3), np.uint8)
    adata = ad.AnnData(np.zeros((1, 1)))
    adata.obsm["spatial"] = np.array([[100.0, 100.0]])
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": image},
            "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 110.0},
        }
    }
    st.pp.extract_patches(adata, patch_size=20, target_mpp=1.0, progress=False)
    params = adata.uns["stmorph"]["patches"]["patches"]
    assert params["source_mpp"] == pytest.approx(0.5)  # 55 µm / 110 px
    assert params["window_px"] == pytest.approx(40.0)


def test_edge_spots_are_padded_white_and_flagged():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, size=(50, 60, 3), dtype=np.uint8)  # no pure white inside
    coords = np.array([[2.0, 3.0], [30.0, 25.0]])
    table = st.pp.extract_patches((image, coords), mpp=1.0, target_mpp=1.0, patch_size=10, progress=False)
    patches = table.obsm["patches"]
    assert table.obs["patch_complete"].tolist() == [False, True]
    # window of spot 0 spans x in [-3, 7), y in [-2, 8): 3 white columns and 2 white rows
    assert (patches[0][:, :3] == 255).all() and (patches[0][:2] == 255).all()
    assert np.array_equal(patches[0][2:, 3:], image[0:8, 0:7])
    assert np.array_equal(patches[1], image[20:30, 25:35])


def test_spots_outside_the_image_are_an_error_that_counts_them():
    image = np.zeros((50, 50, 3), np.uint8)
    coords = np.array([[10.0, 10.0], [60.0, 10.0], [10.0, -1.0], [500.0, 500.0]])
    with pytest.raises(OutOfImageError, match="3 of 4 spot centres"):
        st.pp.extract_patches((image, coords), mpp=1.0, progress=False)


def test_missing_pixel_size_says_how_to_pass_it():
    with pytest.raises(InvalidParameterError, match="mpp="):
        st.pp.extract_patches((np.zeros((10, 10, 3), np.uint8), np.array([[5.0, 5.0]])), progress=False)


def test_failed_extraction_leaves_the_anndata_unchanged(her2st_adata):
    adata = her2st_adata("C2").copy()
    adata.obsm["spatial"] = adata.obsm["spatial"] * 100  # wrong scale: far outside the image
    before = set(adata.obsm), set(adata.obs.columns), set(adata.uns["stmorph"])
    with pytest.raises(OutOfImageError):
        st.pp.extract_patches(adata, progress=False)
    assert (set(adata.obsm), set(adata.obs.columns), set(adata.uns["stmorph"])) == before


def test_lazy_patches_read_from_zarr_equal_eager_extraction(tmp_path):
    from spatialdata import read_zarr

    sdata = st.datasets.simulate(12, 5, n_planted=2, random_state=3)
    sdata.write(tmp_path / "sim.zarr")
    on_disk = read_zarr(tmp_path / "sim.zarr")
    kwargs = {"target_mpp": 3.5, "patch_size": 32, "copy": True, "progress": False}
    eager = st.pp.extract_patches(sdata, **kwargs)
    lazy = st.pp.extract_patches(on_disk, store="lazy", **kwargs)
    assert "patches" not in lazy.obsm and lazy.uns["stmorph"]["patches"]["patches"]["store"] == "lazy"
    assert lazy.obs["patch_complete"].equals(eager.obs["patch_complete"])
    reader = patch_reader(lazy, image=on_disk)
    assert hasattr(reader.image, "dask")  # still a lazy dask array backed by the zarr store
    np.testing.assert_array_equal(reader.read(np.arange(12)), eager.obsm["patches"])
    np.testing.assert_array_equal(reader.read(np.array([7, 2])), eager.obsm["patches"][[7, 2]])
    st.tl.embed(eager, model="hed", progress=False)
    st.tl.embed(lazy, model="hed", image=on_disk, batch_size=5, num_workers=1, progress=False)
    np.testing.assert_array_equal(lazy.obsm["X_hed"], eager.obsm["X_hed"])
    assert lazy.uns["stmorph"]["patches"]["patches"]["zarr_path"] == str(tmp_path / "sim.zarr")
    from_path = st.tl.embed(lazy, model="hed", progress=False, copy=True)  # reopens the recorded zarr store
    np.testing.assert_array_equal(from_path.obsm["X_hed"], eager.obsm["X_hed"])
    in_memory = st.pp.extract_patches(st.datasets.simulate(12, 5, n_planted=2, random_state=3), store="lazy", **kwargs)
    assert "zarr_path" not in in_memory.uns["stmorph"]["patches"]["patches"]
    with pytest.raises(InputTypeError, match="image="):
        st.tl.embed(in_memory, model="hed", progress=False)


def test_lazy_patches_of_her2st_c2_equal_eager_extraction(c2, c2_default):
    lazy = st.pp.extract_patches(c2[0], store="lazy", copy=True, progress=False)
    reader = patch_reader(lazy, image=c2[0])
    np.testing.assert_array_equal(reader.read(np.arange(lazy.n_obs)), c2_default.obsm["patches"])


def test_lazy_patches_of_a_visium_anndata_need_no_image_argument(her2st_adata, c2_default):
    adata = her2st_adata("C2").copy()
    st.pp.extract_patches(adata, store="lazy", progress=False)
    assert "patches" not in adata.obsm
    np.testing.assert_array_equal(patch_reader(adata).read(np.array([0, 100])), c2_default.obsm["patches"][[0, 100]])
    with pytest.raises(StmorphKeyError, match="store='lazy'"):
        patch_reader(adata, key="other")


def _sdata(image_cyx: np.ndarray, coords: np.ndarray, image_tf: dict, shapes_tf: dict, scale_factors=None):
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel

    img = Image2DModel.parse(image_cyx, dims=("c", "y", "x"), transformations=image_tf, scale_factors=scale_factors)
    ids = pd.Index([f"s{i}" for i in range(len(coords))], name="spot_id")
    shapes = ShapesModel.parse(coords, geometry=0, radius=np.ones(len(coords)), index=ids, transformations=shapes_tf)
    table = ad.AnnData(np.zeros((len(coords), 1)), obs=pd.DataFrame(index=ids.astype(str).rename(None)))
    table.obs["region"] = pd.Categorical(["spots"] * len(coords))
    table.obs["spot_id"] = ids.to_numpy()
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"img": img}, shapes={"spots": shapes}, tables={"table": table})


def test_spots_are_placed_through_the_coordinate_transformations():
    from spatialdata.transformations import Identity, Scale, Translation

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(3, 80, 100), dtype=np.uint8)
    # image pixel (col, row) sits at global (2·col + 10, 2·row + 20); spots are given in global units
    image_tf = {"global": Scale([2, 2], axes=("y", "x")).compose_with(Translation([20, 10], axes=("y", "x")))}
    spots_px = np.array([[30.0, 40.0], [70.0, 15.0]])
    spots_global = spots_px * 2 + np.array([10.0, 20.0])
    sdata = _sdata(image, spots_global, image_tf, {"global": Identity()})
    st.pp.extract_patches(sdata, mpp=1.0, target_mpp=1.0, patch_size=8, progress=False)
    table = sdata.tables["table"]
    yxc = np.moveaxis(image, 0, -1)
    for i, (x, y) in enumerate(spots_px):
        assert np.array_equal(table.obsm["patches"][i], _crop(yxc, x, y, 8))


def test_multiscale_image_is_read_at_the_level_nearest_the_target_resolution():
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(2)
    base = resize(rng.random((16, 16, 3)), (256, 256, 3), order=1)  # smooth, so pyramid levels agree
    image = np.moveaxis((base * 255).astype(np.uint8), -1, 0)
    coords = np.array([[128.0, 128.0], [60.0, 90.0]])
    flat = _sdata(image, coords, {"global": Identity()}, {"global": Identity()})
    pyramid = _sdata(image, coords, {"global": Identity()}, {"global": Identity()}, scale_factors=[2, 2])
    kwargs = {"mpp": 0.5, "target_mpp": 2.0, "patch_size": 16, "copy": True, "progress": False}
    from_flat = st.pp.extract_patches(flat, **kwargs)
    from_pyramid = st.pp.extract_patches(pyramid, **kwargs)
    params = from_pyramid.uns["stmorph"]["patches"]["patches"]
    assert params["level"] == 2 and params["image_mpp"] == pytest.approx(2.0)
    diff = np.abs(from_flat.obsm["patches"].astype(float) - from_pyramid.obsm["patches"].astype(float))
    assert diff.mean() < 4


def test_patches_and_parameters_survive_h5ad_round_trip(c2_default, tmp_path):
    path = tmp_path / "t.h5ad"
    c2_default.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert np.array_equal(back.obsm["patches"], c2_default.obsm["patches"])
    assert back.uns["stmorph"]["patches"]["patches"]["target_mpp"] == 0.5
    assert back.obs["patch_complete"].dtype == bool


def test_lazy_patches_refuse_another_image_of_the_same_shape():
    sdata = st.datasets.simulate(40, 6, n_planted=2, random_state=5, spot_px=16)
    image = np.asarray(sdata.images["he"].transpose("y", "x", "c"))
    coords = np.asarray(sdata.tables["table"].obsm["spatial"])
    table = st.pp.extract_patches((image, coords), mpp=1.0, target_mpp=2.0, patch_size=16, store="lazy", progress=False)
    np.testing.assert_array_equal(
        patch_reader(table, image=image).read(np.arange(3)),
        read_patches(image, coords[:3], 16 * 2.0, 16)[0],
    )
    other = np.ascontiguousarray(image[::-1])  # same shape, other pixels
    with pytest.raises(InvalidParameterError, match="not the one the patches"):
        patch_reader(table, image=other)
    with pytest.raises(InvalidParameterError, match="not the one the patches"):
        st.tl.embed(table, model="hed", image=other, progress=False)


def test_a_subset_of_a_lazy_table_reads_the_same_patches_and_still_refuses_another_image():
    sdata = st.datasets.simulate(40, 6, n_planted=2, random_state=5, spot_px=16)
    image = np.asarray(sdata.images["he"].transpose("y", "x", "c"))
    coords = np.asarray(sdata.tables["table"].obsm["spatial"])
    table = st.pp.extract_patches((image, coords), mpp=1.0, target_mpp=2.0, patch_size=16, store="lazy", progress=False)
    rows = np.array([3, 7, 11, 30])  # of the 8 sample spots (rows 0, 6, 11, 17, ... of 40) only 11
    subset = table[rows].copy()
    np.testing.assert_array_equal(
        patch_reader(subset, image=image).read(np.arange(4)), read_patches(image, coords[rows], 32, 16)[0]
    )
    with pytest.raises(InvalidParameterError, match="not the one the patches"):
        patch_reader(subset, image=np.ascontiguousarray(image[::-1]))
    subset.obsm["patches_centres_px"] = subset.obsm["patches_centres_px"] + 3.0  # sample spot 11 moved
    with pytest.raises(InvalidParameterError, match="not the one the patches"):
        patch_reader(subset, image=image)


def test_threaded_reader_gives_the_plain_embeddings_in_the_same_order(tmp_path, monkeypatch):
    from spatialdata import read_zarr

    from stmorph.pp import PatchReader

    sdata = st.datasets.simulate(12, 5, n_planted=2, random_state=3)
    sdata.write(tmp_path / "sim.zarr")
    on_disk = read_zarr(tmp_path / "sim.zarr")
    lazy = st.pp.extract_patches(on_disk, store="lazy", target_mpp=3.5, patch_size=32, copy=True, progress=False)
    plain = st.tl.embed(lazy, image=on_disk, batch_size=3, num_workers=0, progress=False, copy=True)
    read = PatchReader.read

    def first_batch_slow(self, indices):  # later batches finish first in the pool: order must still hold
        if indices[0] == 0:
            time.sleep(0.3)
        return read(self, indices)

    monkeypatch.setattr(PatchReader, "read", first_batch_slow)
    threaded = st.tl.embed(lazy, image=on_disk, batch_size=3, num_workers=3, progress=False, copy=True)
    assert len(np.unique(plain.obsm["X_default"], axis=0)) == 12  # every spot's embedding differs
    np.testing.assert_array_equal(threaded.obsm["X_default"], plain.obsm["X_default"])


def test_nan_pixels_of_a_float_visium_image_are_refused_not_turned_black(her2st_adata):
    visium = her2st_adata("C2").copy()
    lib = next(iter(visium.uns["spatial"]))
    info = visium.uns["spatial"][lib]
    info.get("metadata", {}).pop("source_image_path", None)
    hires = np.asarray(info["images"]["hires"]).astype(np.float32) / 255
    hires[10:20, 10:20] = np.nan
    info["images"] = {"hires": hires}
    before = visium.copy()
    with pytest.raises(st.errors.NonFiniteError, match="NaN or infinite pixel"):
        st.pp.extract_patches(visium, progress=False)
    assert_adata_equal(visium, before)
