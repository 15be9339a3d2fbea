"""The example-data loaders return real facts of the shipped HER2ST sections."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import stmorph as st
from stmorph._image import image_mpp

EXPECTED_SPOTS = {"C2": 187, "C3": 180, "C4": 184, "C5": 181}


def _spots_in_both(data_dir, section):
    folder = data_dir / "her2st"
    counts_ids = pd.read_csv(folder / f"{section}_counts.tsv.gz", sep="\t", usecols=[0]).iloc[:, 0].astype(str)
    spots = pd.read_csv(folder / f"{section}_spots.tsv", sep="\t")
    spot_ids = spots["x"].astype(str) + "x" + spots["y"].astype(str)
    return set(counts_ids) & set(spot_ids)


@pytest.mark.parametrize("section", sorted(EXPECTED_SPOTS))
def test_her2st_has_the_spots_present_in_both_files(her2st_sdata, data_dir, section):
    table = her2st_sdata(section).tables["table"]
    assert table.n_obs == EXPECTED_SPOTS[section]
    assert set(table.obs_names) == _spots_in_both(data_dir, section)
    assert table.var_names.is_unique and table.obs_names.is_unique
    assert np.issubdtype(table.X.dtype, np.integer) and table.X.sum() > 0


@pytest.mark.parametrize("section", sorted(EXPECTED_SPOTS))
def test_her2st_spot_centres_lie_on_tissue(her2st_sdata, section):
    sdata = her2st_sdata(section)
    image = sdata.images["he"].values  # (c, y, x)
    xy = np.round(sdata.tables["table"].obsm["spatial"]).astype(int)
    # mean of a 41 x 41 px window (~28 µm, inside the 100 µm spot) around each centre
    centre = np.array([image[:, y - 20 : y + 21, x - 20 : x + 21].mean() for x, y in xy])
    background = np.median(image[:, ::50, ::50])  # most of the slide is white glass
    assert background > 220
    on_tissue = centre < background - 10
    assert on_tissue.mean() >= 0.98


def test_her2st_records_pixel_size_from_the_array_pitch(her2st_sdata, data_dir):
    # Independent estimate: median spacing of neighbouring spots on the same array row, divided
    # into the 200 µm ST array pitch. (The data show ~290 px per array step, i.e. ~0.69 µm/px;
    # the first two rows of C2's spot file are a 0.88-step pair 256 px apart.)
    spots = pd.read_csv(data_dir / "her2st" / "C2_spots.tsv", sep="\t").sort_values(["y", "x"])
    steps = np.concatenate(
        [np.diff(row["pixel_x"].to_numpy()) / np.diff(row["x"].to_numpy()) for _, row in spots.groupby("y")]
    )
    expected = 200.0 / np.median(steps)
    sdata = her2st_sdata("C2")
    mpp = image_mpp(sdata, "he")
    assert 0.6 < mpp < 0.85
    assert mpp == pytest.approx(expected, rel=0.03)
    radius = sdata.shapes["spots"]["radius"].to_numpy()
    np.testing.assert_allclose(radius * mpp, 50.0)


def test_her2st_layout_is_spatialdata(her2st_sdata):
    sdata = her2st_sdata("C2")
    img = sdata.images["he"]
    assert img.dims == ("c", "y", "x") and img.shape[0] == 3 and img.dtype == np.uint8
    table = sdata.tables["table"]
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    np.testing.assert_array_equal(sdata.shapes["spots"].index.to_numpy(), table.obs["spot_id"].to_numpy())
    xy = table.obsm["spatial"]
    assert (xy[:, 0] < img.shape[2]).all() and (xy[:, 1] < img.shape[1]).all()


def test_her2st_adata_is_drawable_by_scanpy(her2st_adata):
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = her2st_adata("C2")
    lib = adata.uns["spatial"]["C2"]
    sf = lib["scalefactors"]
    assert max(lib["images"]["hires"].shape[:2]) == 2000
    assert sf["spot_diameter_fullres"] * sf["microns_per_pixel"] == pytest.approx(100.0)
    ax = sc.pl.spatial(adata, color="ERBB2", library_id="C2", show=False)
    assert len(ax) == 1 and len(ax[0].images) == 1
    plt.close("all")


def test_her2st_any_section_in_folder_loads(tmp_path, data_dir):
    folder = tmp_path / "her2st"
    folder.mkdir()
    for suffix in ("_HE.jpg", "_counts.tsv.gz", "_spots.tsv"):
        shutil.copy(data_dir / "her2st" / f"C5{suffix}", folder / f"X1{suffix}")
    adata = st.datasets.her2st_adata("X1", data_dir=tmp_path)
    assert adata.n_obs == EXPECTED_SPOTS["C5"]


def test_her2st_unknown_section_names_missing_path(data_dir):
    with pytest.raises(FileNotFoundError, match=r"Z9_HE\.jpg"):
        st.datasets.her2st("Z9", data_dir=data_dir)


def test_her2st_mismatched_files_say_how_many_matched(tmp_path, data_dir):
    folder = tmp_path / "her2st"
    folder.mkdir()
    shutil.copy(data_dir / "her2st" / "C2_HE.jpg", folder / "Q1_HE.jpg")
    shutil.copy(data_dir / "her2st" / "C2_counts.tsv.gz", folder / "Q1_counts.tsv.gz")
    spots = pd.read_csv(data_dir / "her2st" / "C2_spots.tsv", sep="\t")
    spots["x"] += 100  # no id matches any more
    spots.to_csv(folder / "Q1_spots.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"only 0 of 187 count spots"):
        st.datasets.her2st("Q1", data_dir=tmp_path)


def test_loader_offline_error_is_clear(tmp_path, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr("stmorph.datasets._paths._repo_shared_data", lambda: tmp_path / "absent")
    monkeypatch.delenv("STMORPH_DATA_DIR", raising=False)
    monkeypatch.setenv("STMORPH_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConnectionError, match="offline"):
        st.datasets.her2st("C2")
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_simulate_plants_image_driven_genes():
    sdata = st.datasets.simulate(225, 30, n_planted=6, n_factors=3, random_state=1)
    table = sdata.tables["table"]
    assert table.var["planted"].sum() == 6
    image = sdata.images["he"].values.astype(float)
    xy = table.obsm["spatial"].astype(int)
    # mean red-minus-blue of each tile falls as the haematoxylin factor z0 rises
    colour = np.array(
        [
            (image[0, y - 20 : y + 20, x - 20 : x + 20] - image[2, y - 20 : y + 20, x - 20 : x + 20]).mean()
            for x, y in xy
        ]
    )
    z = table.obsm["latent"]
    assert np.corrcoef(colour, z[:, 0])[0, 1] < -0.8
    logc = np.log1p(table.X.toarray())
    corr = [abs(np.corrcoef(logc[:, g], z[:, table.var["factor"].iloc[g]])[0, 1]) for g in range(6)]
    noise = [abs(np.corrcoef(logc[:, g], z[:, 0])[0, 1]) for g in range(6, 30)]
    assert min(corr) > 0.4 and max(noise) < 0.3
