"""Cohorts with dask: st.tl.sps and st.tl.embed_cohort over many slides give the serial results."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import stmorph as st
from stmorph.errors import InputTypeError, InvalidParameterError

pytestmark = pytest.mark.slow  # starts a dask cluster and thread pools

PATCHES = {"target_mpp": 3.5, "patch_size": 32}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A 2-worker local dask cluster (worker processes: slides are pickled to them), scratch space in a temp folder."""
    from distributed import Client, LocalCluster

    scratch = tmp_path_factory.mktemp("dask")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, local_directory=scratch
    ) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def slices():
    out = {}
    for i in range(4):
        a = st.datasets.simulate(120, 15, n_planted=3 * i, random_state=20 + i).tables["table"]
        st.pp.prepare_expression(a)
        out[f"s{i}"] = a
    return out


def _serial_sps(slices: dict) -> pd.DataFrame:
    """SPS and EPS of each slice by st.tl.eps on a copy, one slice after another."""
    rows, eps = [], {}
    for name, a in slices.items():
        single = a.copy()
        st.tl.eps(single, use_rep="latent", progress=False)
        rows.append({"slice": name, "sps": single.uns["sps"]["sps"], "n_spots": single.n_obs})
        eps[name] = single.var["eps"]
    return pd.DataFrame(rows), pd.DataFrame(eps)


def test_sps_on_threads_and_on_a_cluster_equals_the_serial_run(slices, client):
    serial, serial_eps = _serial_sps(slices)
    for kwargs in ({}, {"client": client}):
        summary, table = st.tl.sps(slices, use_rep="latent", **kwargs)
        assert list(summary["slice"]) == list(slices)
        np.testing.assert_array_equal(summary["sps"].to_numpy(), serial["sps"].to_numpy())
        np.testing.assert_array_equal(summary["n_spots"].to_numpy(), serial["n_spots"].to_numpy())
        pd.testing.assert_frame_equal(table.loc[serial_eps.index], serial_eps, check_names=False)


def _serial_embed(sdata) -> np.ndarray:
    table = st.pp.extract_patches(sdata, store="lazy", copy=True, progress=False, **PATCHES)
    st.tl.embed(table, model="hed", image=sdata, progress=False)
    return table.obsm["X_hed"]


def test_embed_over_spatialdata_objects_and_zarr_paths_equals_the_serial_run(tmp_path, client):
    slides = [st.datasets.simulate(25, 5, n_planted=2, random_state=s) for s in range(3)]
    expected = [_serial_embed(s) for s in slides]
    for s in slides:
        st.pp.extract_patches(s, store="lazy", progress=False, **PATCHES)
    slides[2].write(tmp_path / "s2.zarr")  # the lazy extraction is stored with the table
    cohort = [slides[0], slides[1], str(tmp_path / "s2.zarr")]

    tables = st.tl.embed_cohort(cohort, model="hed", copy=True)
    assert "X_hed" not in slides[0].tables["table"].obsm  # copy=True leaves the slides unchanged
    for table, exp in zip(tables, expected):
        np.testing.assert_array_equal(table.obsm["X_hed"], exp)
        assert table.uns["stmorph"]["embed"]["X_hed"]["n_patches"] == 25

    on_cluster = st.tl.embed_cohort(cohort, model="hed", client=client, copy=True)
    for table, exp in zip(on_cluster, expected):
        np.testing.assert_array_equal(table.obsm["X_hed"], exp)

    assert st.tl.embed_cohort(slides[:2], model="hed", client=client) is None  # written in place
    for sdata, exp in zip(slides[:2], expected):
        np.testing.assert_array_equal(sdata.tables["table"].obsm["X_hed"], exp)


def test_embed_extracts_missing_patches_lazily_with_the_defaults(tmp_path):
    sdata = st.datasets.simulate(10, 5, n_planted=2, random_state=7)
    (table,) = st.tl.embed_cohort([sdata], model="hed", copy=True)
    params = table.uns["stmorph"]["patches"]["patches"]
    assert params["store"] == "lazy" and params["patch_size"] == 224 and params["target_mpp"] == 0.5
    expected = st.pp.extract_patches(sdata, copy=True, progress=False)  # eager, same defaults
    st.tl.embed(expected, model="hed", progress=False)
    np.testing.assert_array_equal(table.obsm["X_hed"], expected.obsm["X_hed"])
    assert table.obs["patch_complete"].equals(expected.obs["patch_complete"])


def test_bad_cohort_inputs_are_clear_errors(slices, sim_table):
    with pytest.raises(InputTypeError, match=r"dask\.distributed\.Client"):
        st.tl.sps(slices, use_rep="latent", client="tcp://localhost:8786")
    with pytest.raises(InputTypeError, match="SpatialData objects or zarr paths"):
        st.tl.embed_cohort([sim_table], model="hed")
    with pytest.raises(InvalidParameterError, match="empty list"):
        st.tl.embed_cohort([], model="hed")
    with pytest.raises(InputTypeError, match=r"st\.tl\.embed_cohort"):
        st.tl.embed([sim_table, sim_table], model="hed")


def test_zarr_paths_are_never_written_so_in_place_needs_objects(tmp_path):
    sdata = st.datasets.simulate(10, 5, n_planted=2, random_state=8)
    sdata.write(tmp_path / "s.zarr")
    before = sorted((tmp_path / "s.zarr").rglob("*"))
    with pytest.raises(InvalidParameterError, match="copy=True"):
        st.tl.embed_cohort([sdata, tmp_path / "s.zarr"], model="hed")
    assert "X_hed" not in sdata.tables["table"].obsm and "patches_centres_px" not in sdata.tables["table"].obsm
    (table,) = st.tl.embed_cohort([tmp_path / "s.zarr"], model="hed", copy=True)
    assert table.obsm["X_hed"].shape == (10, 57)
    assert sorted((tmp_path / "s.zarr").rglob("*")) == before  # nothing written to the store


_CONCURRENT_KERNELS = """
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from scipy import sparse
from stmorph.tl._geary import geary_terms
from stmorph.tl._graph import knn_graph

rng = np.random.default_rng(0)
emb, X = rng.standard_normal((600, 8)), rng.random((600, 40))
graph, _, _ = knn_graph(emb, 5, method="exact")
jobs = [lambda: geary_terms(graph, X)[0].sum(), lambda: geary_terms(graph, sparse.csr_matrix(X))[0].sum(),
        lambda: float(knn_graph(emb, 5, method="exact")[0].sum())] * 8
with ThreadPoolExecutor(4) as pool:
    results = list(pool.map(lambda job: job(), jobs))
assert len(set(np.round(results[0::3], 8))) == 1 and len(set(results[2::3])) == 1
import numba
print("layer", numba.threading_layer())
"""


def test_parallel_kernels_survive_concurrent_threads_on_numba_workqueue_layer():
    # workqueue (numba's fallback without OpenMP/TBB) aborts the process on concurrent parallel
    # launches, as from dask's threaded scheduler; stmorph serialises its kernels there
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    proc = subprocess.run([sys.executable, "-c", _CONCURRENT_KERNELS], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "layer workqueue" in proc.stdout


def test_a_slide_whose_only_table_has_another_name_needs_no_table_key():
    sdata = st.datasets.simulate(10, 5, n_planted=2, random_state=9)
    sdata.tables["bins"] = sdata.tables.pop("table")
    (table,) = st.tl.embed_cohort([sdata], model="hed", copy=True)
    expected = st.pp.extract_patches(sdata, copy=True, progress=False)
    st.tl.embed(expected, model="hed", progress=False)
    np.testing.assert_array_equal(table.obsm["X_hed"], expected.obsm["X_hed"])
