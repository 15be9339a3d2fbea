"""st.datasets.read_hest on a HEST-1k sample written by the test (from a shipped HER2ST section) in HEST's layout."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pytest

import stmorph as st
from stmorph._anndata import dataset_info
from stmorph.errors import InvalidParameterError, ShapeMismatchError, StmorphKeyError
from stmorph.pp import patch_reader

SAMPLE = "TEST0"


@pytest.fixture(scope="module")
def c2_patches(her2st_sdata):
    """The C2 table with 224 px patches at 0.5 µm/px cut by stmorph (the reference)."""
    return st.pp.extract_patches(her2st_sdata("C2"), copy=True, progress=False)


def _write_hest(root, table, order, *, extra_barcode=None, patches=True):
    """Write ``st/``, ``metadata/`` and ``patches/`` as HEST-1k ships them; patches in row ``order`` of the table."""
    for folder in ("st", "patches", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    expression = table.copy()
    del expression.obsm["patches"]
    expression.uns = {}
    expression.write_h5ad(root / "st" / f"{SAMPLE}.h5ad")
    meta = {"pixel_size_um_estimated": dataset_info(table)["mpp"], "tissue": "Breast", "st_technology": "ST",
            "spot_diameter": 100.0, "treatment_comment": None}  # fmt: skip
    (root / "metadata" / f"{SAMPLE}.json").write_text(json.dumps(meta))
    if not patches:
        return
    img = table.obsm["patches"][order]
    barcodes = list(table.obs_names[order])
    if extra_barcode is not None:  # a patch whose spot is not in the table
        img = np.concatenate([img, img[:1]])
        barcodes.append(extra_barcode)
    with h5py.File(root / "patches" / f"{SAMPLE}.h5", "w") as fh:
        fh["img"] = img
        fh["barcode"] = np.array(barcodes, dtype="S").reshape(-1, 1)
        fh["coords"] = np.zeros((len(barcodes), 2), dtype=np.int64)


def test_patches_follow_the_table_order_and_spots_without_a_patch_are_dropped(c2_patches, tmp_path):
    rng = np.random.default_rng(0)
    order = rng.permutation(c2_patches.n_obs)[:-7]  # HEST cut no patch for 7 spots; the rest is shuffled
    _write_hest(tmp_path, c2_patches, order, extra_barcode="not_a_spot")
    table = st.datasets.read_hest(tmp_path, SAMPLE)
    kept = np.sort(order)
    assert list(table.obs_names) == list(c2_patches.obs_names[kept])  # the h5ad's order, not the patch file's
    np.testing.assert_array_equal(table.obsm["patches"], c2_patches.obsm["patches"][kept])
    np.testing.assert_array_equal(table.obsm["spatial"], c2_patches.obsm["spatial"][kept])
    assert (table.X != c2_patches[kept].X).nnz == 0
    params = table.uns["stmorph"]["patches"]["patches"]
    mpp = dataset_info(c2_patches)["mpp"]
    assert params["target_mpp"] == 0.5 and params["patch_size"] == 224 and params["tile_um"] == 112.0
    assert params["window_px"] == pytest.approx(224 * 0.5 / mpp)
    assert table.uns["stmorph"]["dataset"]["mpp"] == mpp
    hest = table.uns["stmorph"]["dataset"]["metadata"]
    assert hest["tissue"] == "Breast" and "treatment_comment" not in hest and "wsi_path" not in hest


def test_a_hest_sample_goes_through_embed_and_survives_h5ad(c2_patches, tmp_path):
    _write_hest(tmp_path, c2_patches, np.arange(c2_patches.n_obs))
    (tmp_path / "wsis").mkdir()
    (tmp_path / "wsis" / f"{SAMPLE}.tif").write_bytes(b"")  # presence is recorded, the WSI is not opened
    table = st.datasets.read_hest(tmp_path, SAMPLE)
    st.tl.embed(table, model="hed", progress=False)
    reference = st.tl.embed(c2_patches, model="hed", progress=False, copy=True)
    np.testing.assert_allclose(table.obsm["X_hed"], reference.obsm["X_hed"])
    assert table.uns["stmorph"]["dataset"]["metadata"]["wsi_path"].endswith(f"{SAMPLE}.tif")
    table.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns["stmorph"]["patches"]["patches"]["source"] == "hest"


def test_missing_patches_file_is_a_named_error_and_patches_false_reads_expression(c2_patches, tmp_path):
    _write_hest(tmp_path, c2_patches, np.arange(c2_patches.n_obs), patches=False)
    with pytest.raises(FileNotFoundError, match=rf"patches/{SAMPLE}\.h5.*patches=False"):
        st.datasets.read_hest(tmp_path, SAMPLE)
    table = st.datasets.read_hest(tmp_path, SAMPLE, patches=False)
    assert table.n_obs == c2_patches.n_obs and "patches" not in table.obsm
    with pytest.raises(FileNotFoundError, match=r"st/OTHER\.h5ad.*metadata/OTHER\.json"):
        st.datasets.read_hest(tmp_path, "OTHER")


def test_patch_barcodes_of_another_sample_are_refused(c2_patches, tmp_path):
    _write_hest(tmp_path, c2_patches, np.arange(c2_patches.n_obs))
    with h5py.File(tmp_path / "patches" / f"{SAMPLE}.h5", "a") as fh:
        del fh["barcode"]
        fh["barcode"] = np.array([f"other_{i}" for i in range(c2_patches.n_obs)], dtype="S").reshape(-1, 1)
    with pytest.raises(ShapeMismatchError, match="do not belong together"):
        st.datasets.read_hest(tmp_path, SAMPLE)


def test_lazy_hest_sample_embeds_as_the_eager_one_reading_the_file_batch_by_batch(c2_patches, tmp_path):
    order = np.random.default_rng(1).permutation(c2_patches.n_obs)[:-5]  # shuffled patch file, 5 spots without one
    _write_hest(tmp_path, c2_patches, order)
    eager = st.datasets.read_hest(tmp_path, SAMPLE)
    lazy = st.datasets.read_hest(tmp_path, SAMPLE, store="lazy")
    assert "patches" not in lazy.obsm and list(lazy.obs_names) == list(eager.obs_names)
    reader = patch_reader(lazy)
    np.testing.assert_array_equal(reader.read(np.array([9, 0, 9])), eager.obsm["patches"][[9, 0, 9]])
    st.tl.embed(eager, model="hed", progress=False)
    st.tl.embed(lazy, model="hed", batch_size=16, checkpoint=tmp_path / "ckpt", progress=False)
    np.testing.assert_array_equal(lazy.obsm["X_hed"], eager.obsm["X_hed"])
    again = st.tl.embed(lazy, model="hed", batch_size=16, checkpoint=tmp_path / "ckpt", resume=True,
                        key_added="X_again", copy=True, progress=False)  # fmt: skip
    np.testing.assert_array_equal(again.obsm["X_again"], eager.obsm["X_hed"])
    subset = lazy[[40, 3, 17]].copy()  # a subset reads its own spots' rows of the file
    np.testing.assert_array_equal(patch_reader(subset).read(np.arange(3)), eager.obsm["patches"][[40, 3, 17]])
    lazy.write_h5ad(tmp_path / "lazy.h5ad")
    back = ad.read_h5ad(tmp_path / "lazy.h5ad")
    st.tl.embed(back, model="hed", key_added="X_back", progress=False)
    np.testing.assert_array_equal(back.obsm["X_back"], eager.obsm["X_hed"])
    (tmp_path / "patches" / f"{SAMPLE}.h5").rename(tmp_path / "moved.h5")
    before = back.copy()
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        st.tl.embed(back, model="hed", key_added="X_gone", progress=False)
    assert "X_gone" not in back.obsm and back.uns["stmorph"].keys() == before.uns["stmorph"].keys()


def test_lazy_hest_patches_are_refused_by_the_dense_strategy_and_a_bad_store_is_named(c2_patches, tmp_path):
    _write_hest(tmp_path, c2_patches, np.arange(c2_patches.n_obs))
    lazy = st.datasets.read_hest(tmp_path, SAMPLE, store="lazy")
    with pytest.raises(StmorphKeyError, match="strategy='dense' reads the image"):
        st.tl.embed(lazy, strategy="dense", progress=False)
    with pytest.raises(InvalidParameterError, match="store"):
        st.datasets.read_hest(tmp_path, SAMPLE, store="disk")
