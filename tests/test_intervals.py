"""Conformal prediction intervals (``st.tl.predict(..., interval=)``): coverage, the scale, save/load, memory."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pytest

import stmorph as st
from stmorph.errors import NotCalibratedError, TooFewObservationsError
from stmorph.models import _conformal
from stmorph.models._conformal import Calibration, calibrate, interval_scores

N_GENES, DIM = 20, 6


def _section(n: int, seed: int, shuffle: bool = False) -> ad.AnnData:
    """A section whose expression is linear in the embedding plus noise whose SD grows with the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    weights = np.random.default_rng(0).normal(size=(DIM, N_GENES))  # the same genes in every section
    noise_sd = 0.2 + 1.5 * (x[:, :1] > 0.5)  # planted: a third of the spots are much noisier
    y = x @ weights + noise_sd * rng.normal(size=(n, N_GENES))
    if shuffle:
        y = y[rng.permutation(n)]
    adata = ad.AnnData(y.astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(N_GENES)]
    adata.obs_names = [f"s{seed}_{i}" for i in range(n)]
    adata.obsm["X_emb"] = x
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    return adata


@pytest.fixture(scope="module")
def refs():
    return [_section(300, seed) for seed in (1, 2, 3)]


def _coverage(query: ad.AnnData, key: str) -> np.ndarray:
    y, lower, upper = query.X, query.layers[f"{key}_lower"], query.layers[f"{key}_upper"]
    return ((y >= lower) & (y <= upper)).mean(axis=0)


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_intervals_cover_planted_noise_at_the_nominal_level(refs, level):
    query = _section(3000, 7)
    st.tl.predict(query, refs, method="ridge", use_rep="X_emb", interval=level, key_added="p")
    assert abs(_coverage(query, "p").mean() - level) <= 0.03
    assert query.layers["p_lower"].dtype == np.float32
    record = query.uns["stmorph"]["predict"]["p"]["interval"]
    assert record["level"] == level and record["scale"] == "knn"  # the planted noise is visible in the embedding


def test_scaled_intervals_are_narrower_where_the_noise_is_planted_low(refs):
    query = _section(3000, 7)
    st.tl.predict(query, refs, method="ridge", use_rep="X_emb", interval=0.9, key_added="p")
    width = query.layers["p_upper"] - query.layers["p_lower"]
    quiet = query.obsm["X_emb"][:, 0] <= 0.5
    assert np.median(width[quiet]) < 0.5 * np.median(width[~quiet])


def test_scale_choice_beats_unscaled_width_at_the_same_coverage(refs):
    x = np.concatenate([r.obsm["X_emb"] for r in refs])
    y = np.concatenate([r.X for r in refs])
    groups = np.repeat([0, 1, 2], 300)
    oof = np.zeros_like(y)  # any predictor: here the constant 0
    query = _section(3000, 7)
    widths, coverages = {}, {}
    for scale in ("none", "knn"):
        cal = calibrate(x, y, oof, groups, 0.9, scales=[scale])
        lower, upper = cal.intervals(np.zeros_like(query.X), np.arange(N_GENES), query.obsm["X_emb"])
        scores = interval_scores(query.X, lower, upper, 0.9)
        widths[scale], coverages[scale] = np.mean(scores["width"]), np.mean(scores["coverage"])
    assert abs(coverages["knn"] - coverages["none"]) <= 0.03
    assert widths["knn"] < 0.9 * widths["none"]


def test_null_shuffled_references_keep_coverage_and_no_scale_helps(refs):
    """Expression shuffled against the images: the intervals stay valid and as wide as the genes' spread."""
    shuffled = [_section(300, seed, shuffle=True) for seed in (1, 2, 3)]
    query = _section(3000, 7, shuffle=True)
    st.tl.predict(query, shuffled, method="ridge", use_rep="X_emb", interval=0.9, key_added="p")
    assert abs(_coverage(query, "p").mean() - 0.9) <= 0.03
    width = (query.layers["p_upper"] - query.layers["p_lower"]).mean(axis=0) / query.X.std(axis=0)
    assert np.all(width > 2.8)  # a 90 % interval of a Gaussian is 3.29 SD wide: nothing is learnt


def test_model_and_saved_model_give_the_same_intervals(refs, tmp_path):
    query = _section(200, 7)
    model = st.tl.predict(query, refs, method="knn", use_rep="X_emb", interval=0.9, key_added="p", return_model=True)
    model.save(tmp_path / "m")
    for key, fitted in (("again", model), ("loaded", st.models.load(tmp_path / "m"))):
        st.tl.predict(query, model=fitted, interval=0.9, key_added=key)
        for side in ("lower", "upper"):
            np.testing.assert_array_equal(query.layers[f"{key}_{side}"], query.layers[f"p_{side}"])


@pytest.mark.usefixtures("one_torch_thread")
def test_torch_model_saves_its_calibration(refs, tmp_path):
    query = _section(100, 7)
    options = {"epochs": 3, "device": "cpu", "progress": False}
    model = st.tl.predict(query, refs, method="mlp", use_rep="X_emb", interval=0.8, return_model=True, **options)
    model.save(tmp_path / "m")
    loaded = st.models.load(tmp_path / "m")
    st.tl.predict(query, model=loaded, interval=0.8, key_added="loaded")
    np.testing.assert_array_equal(query.layers["loaded_upper"], query.layers["predicted_mlp_upper"])


def test_model_without_calibration_or_at_another_level_is_refused(refs, tmp_path):
    query = _section(100, 7)
    plain = st.tl.predict(query, refs, method="ridge", use_rep="X_emb", return_model=True)
    plain.save(tmp_path / "plain")
    with pytest.raises(NotCalibratedError, match="no interval calibration"):
        st.tl.predict(query, model=st.models.load(tmp_path / "plain"), interval=0.9)
    calibrated = st.tl.predict(query, refs, method="ridge", use_rep="X_emb", interval=0.9, return_model=True)
    with pytest.raises(NotCalibratedError, match=r"calibrated for interval=0\.9"):
        st.tl.predict(query, model=calibrated, interval=0.8)


def test_a_single_small_reference_cannot_calibrate():
    tiny = _section(12, 1)
    with pytest.raises(TooFewObservationsError, match="cannot calibrate"):
        st.tl.predict(_section(50, 7), tiny, method="ridge", use_rep="X_emb", interval=0.95)


def test_a_single_reference_calibrates_on_spatial_blocks(tmp_path):
    query = _section(3000, 7)
    st.tl.predict(query, _section(600, 1), method="ridge", use_rep="X_emb", interval=0.9, key_added="p")
    assert abs(_coverage(query, "p").mean() - 0.9) <= 0.03
    query.write_h5ad(tmp_path / "q.h5ad")  # the record (with the scale's CV table) is plain
    back = ad.read_h5ad(tmp_path / "q.h5ad")
    np.testing.assert_array_equal(back.layers["p_upper"], query.layers["p_upper"])
    assert set(back.uns["stmorph"]["predict"]["p"]["interval"]["cv"]) == {"scale", "fold", "coverage", "width", "score"}


def test_intervals_need_no_more_memory_than_their_two_layers(monkeypatch):
    rng = np.random.default_rng(0)
    n, g, n_cal = 4000, 500, 300
    one = np.ones(g, np.float32)
    cal = Calibration(0.9, "knn", one, -10 * one, 10 * one)
    cal.bank = rng.normal(size=(n_cal, DIM)).astype(np.float32)
    cal.spread, cal.floor = rng.uniform(size=(n_cal, g)).astype(np.float32), 0.1 * one
    layer = rng.normal(size=(n, g + 10)).astype(np.float32)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    monkeypatch.setattr(_conformal, "MAX_ELEMENTS", 2**15)
    cal.intervals(layer[:10], np.arange(g), x[:10])  # warm-up: imports, torch's first allocations
    tracemalloc.start()
    lower, upper = cal.intervals(layer, np.arange(g), x)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 2 * layer.nbytes + 2**15 * 4 * 8  # the two outputs plus a few chunk-sized temporaries
    assert np.all(lower[:, :g] <= layer[:, :g]) and np.all(np.isnan(upper[:, g:]))


def test_evaluate_reports_coverage_and_relative_width(refs):
    query = _section(500, 7)
    st.tl.predict(query, refs, method="ridge", use_rep="X_emb", interval=0.9, key_added="predicted_ridge")
    st.tl.evaluate(query, "predicted_ridge", n_top=5, hit_at_t=(1,))
    y, lower, upper = query.X, query.layers["predicted_ridge_lower"], query.layers["predicted_ridge_upper"]
    coverage = ((y >= lower) & (y <= upper)).mean(axis=0)
    width = (upper - lower).mean(axis=0) / y.std(axis=0)
    np.testing.assert_allclose(query.var["coverage_ridge"], coverage, rtol=1e-6)
    np.testing.assert_allclose(query.var["interval_width_ridge"], width, rtol=1e-5)
    summary = query.uns["stmorph"]["evaluate"]["ridge"]["summary"]
    assert summary["coverage_all"] == pytest.approx(coverage.mean())
    assert summary["interval_width_all"] == pytest.approx(width.mean(), rel=1e-5)


def test_patch_inputs_get_one_width_per_gene():
    """Methods trained on image patches (ST-Net) have no embedding to find neighbours in: scale "none"."""
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, size=(90, 4, 4, 3), dtype=np.uint8)
    y = rng.normal(size=(90, 3))
    cal = calibrate(patches, y, np.zeros_like(y), np.repeat([0, 1, 2], 30), 0.9)
    assert cal.scale == "none" and cal.bank is None
    lower, upper = cal.intervals(np.zeros((5, 3)), np.arange(3), patches[:5])
    np.testing.assert_allclose(upper - lower, np.broadcast_to(2 * cal.quantile, (5, 3)), rtol=1e-6)
