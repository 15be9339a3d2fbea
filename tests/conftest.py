"""Shared fixtures: the real shipped HER2ST sections and a planted-signal simulated slice.

Tests that need the shipped data read it from ``$STMORPH_DATA_DIR`` or ``../shared/data``; when
it is missing they fail with a message saying where it should be (never skip).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

import stmorph as st
from stmorph.datasets._paths import DATA_ENV, resolve_data_dir

SECTIONS = ("C2", "C3", "C4", "C5")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads the shipped sections (through ``data_dir``) as ``slow``.

    Torch training, the demo and the cluster tests carry the mark themselves; ``pytest -m "not
    slow"`` is the quick loop while developing, CI runs everything.
    """
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fast_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """``method="auto"`` without its network candidate (BLEEP with context) whatever the data size, for the tests
    of other parts of ``auto``; tests/test_knn_cv.py checks that BLEEP joins and leaves by its cost."""
    monkeypatch.setattr("stmorph.tl._auto.NETWORK_SPOT_FITS", 0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding ``her2st/``; fails (not skips) when the shipped data is absent."""
    folder, is_cache = resolve_data_dir(None)
    her2st = folder / "her2st"
    if is_cache or not all((her2st / f"{s}_counts.tsv.gz").exists() for s in SECTIONS):
        pytest.fail(
            f"The shipped HER2ST data was not found at {her2st}. Set ${DATA_ENV} to the folder that holds "
            "her2st/ (in this workplace: ../shared/data beside the repository).",
            pytrace=False,
        )
    return folder


def _cached_sections(reader: Callable[..., Any], data_dir: Path) -> Callable[..., Any]:
    """``load(section="C2")``: ``reader(section, data_dir=data_dir)``, read once per section and then cached."""
    cache = {}

    def load(section: str = "C2"):
        if section not in cache:
            cache[section] = reader(section, data_dir=data_dir)
        return cache[section]

    return load


@pytest.fixture(scope="session")
def her2st_sdata(data_dir):
    """Session cache of loaded HER2ST sections: ``her2st_sdata("C2")``. Treat as read-only."""
    return _cached_sections(st.datasets.her2st, data_dir)


@pytest.fixture(scope="session")
def her2st_adata(data_dir):
    """Session cache of Visium-style HER2ST AnnData: ``her2st_adata("C2")``. Treat as read-only; copy first."""
    return _cached_sections(st.datasets.her2st_adata, data_dir)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train faster on one thread (and the CI machine has two cores); restored after the module.

    Torch test modules use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sim_sdata():
    """A simulated slice: 400 spots, 60 genes, the first 9 planted (read-only)."""
    return st.datasets.simulate(400, 60, n_planted=9, random_state=0)


@pytest.fixture
def sim_table(sim_sdata):
    """A fresh copy of the simulated table, safe to modify."""
    return sim_sdata.tables["table"].copy()


CROP_X0, CROP_Y0, CROP_SIDE = 3500, 4500, 2600
"""The window of HER2ST C2 (section pixels) written into the Space Ranger test folders."""


@pytest.fixture(scope="session")
def c2_crop(her2st_sdata):
    """``(crop, table)``: a window of the C2 image and the C2 spots whose 112 µm patch lies wholly inside it."""
    import numpy as np
    from _spaceranger import Crop

    sdata = her2st_sdata("C2")
    image = np.moveaxis(np.asarray(sdata.images["he"].data), 0, -1)
    table = sdata.tables["table"]
    mpp = st._anndata.dataset_info(table)["mpp"]
    crop = Crop(image[CROP_Y0 : CROP_Y0 + CROP_SIDE, CROP_X0 : CROP_X0 + CROP_SIDE].copy(), CROP_X0, CROP_Y0, mpp)
    margin = 112 / mpp / 2 + 8  # half a default patch window plus the resampling filter's reach
    return crop, table[crop.inside(table.obsm["spatial"], margin)].copy()


@pytest.fixture(scope="session")
def visium_folder(tmp_path_factory, c2_crop):
    """``(folder, full-resolution image path)``: a Visium Space Ranger folder of the C2 crop (library ``C2``)."""
    from _spaceranger import write_visium

    folder = tmp_path_factory.mktemp("spaceranger") / "C2"
    image_path = write_visium(folder, c2_crop[0], c2_crop[1], "C2")
    return folder, image_path


@pytest.fixture(scope="session")
def visium_hd_folder(tmp_path_factory, c2_crop):
    """A Visium HD Space Ranger folder over the C2 crop with 8 µm and 16 µm bins."""
    from _spaceranger import write_visium_hd

    folder = tmp_path_factory.mktemp("spaceranger_hd") / "C2hd"
    write_visium_hd(folder, c2_crop[0])
    return folder
