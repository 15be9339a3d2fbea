"""st.tl.evaluate: per-gene metrics on the right spots and truth, BLEEP's summary table, Hit@T, bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from _adata_compare import assert_adata_equal
from scipy import stats

import stmorph as st
from stmorph.errors import InvalidParameterError, NonFiniteError, StmorphKeyError


@pytest.fixture
def scored():
    """60 spots × 12 genes: log1p-like truth in X, a z-scored copy in layers, a noisy prediction of both."""
    rng = np.random.default_rng(7)
    truth = rng.gamma(2.0, 1.0 + np.arange(12) / 4, size=(60, 12))
    adata = ad.AnnData(truth.copy(), var=pd.DataFrame(index=[f"g{i}" for i in range(12)]))
    adata.obs_names = [f"s{i}" for i in range(60)]
    adata.layers["scaled"] = (truth - truth.mean(0)) / truth.std(0)
    adata.layers["predicted_manual"] = (truth + rng.normal(0, 1.5, size=truth.shape)).astype(np.float32)
    return adata


def _scipy_pearson(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.array([stats.pearsonr(truth[:, g], pred[:, g])[0] for g in range(truth.shape[1])])


def test_per_gene_metrics_match_scipy_on_all_spots(scored):
    assert st.tl.evaluate(scored, "predicted_manual", n_top=5) is None
    truth, pred = scored.X, scored.layers["predicted_manual"].astype(float)
    np.testing.assert_allclose(scored.var["pearson_manual"], _scipy_pearson(truth, pred), rtol=1e-6)
    rho = [stats.spearmanr(truth[:, g], pred[:, g])[0] for g in range(12)]
    np.testing.assert_allclose(scored.var["spearman_manual"], rho, rtol=1e-6)
    np.testing.assert_allclose(scored.var["rmse_manual"], np.sqrt(((truth - pred) ** 2).mean(0)), rtol=1e-6)
    assert np.isfinite(scored.var["ssim_manual"]).all()
    record = scored.uns["stmorph"]["evaluate"]["manual"]
    assert record["subset"] == "all" and record["n_spots"] == 60 and record["truth"] == "X"


def test_summary_follows_bleep_heg_hvg_and_marker_definitions(scored):
    options = dict(n_top=4, marker_genes=["g0", "g5"])
    table = st.tl.evaluate(scored, "predicted_manual", inplace=False, **options)
    st.tl.evaluate(scored, "predicted_manual", **options)
    r = pd.Series(_scipy_pearson(scored.X, scored.layers["predicted_manual"]), index=scored.var_names)
    truth = pd.DataFrame(scored.X, columns=scored.var_names)
    heg = truth.mean().nlargest(4).index
    hvg = truth.var().nlargest(4).index
    row = table.loc["manual"]
    assert row["pearson_HEG-4"] == pytest.approx(r[heg].mean())
    assert row["pearson_HVG-4"] == pytest.approx(r[hvg].mean())
    assert row["pearson_MG"] == pytest.approx(r[["g0", "g5"]].mean())
    assert row["pearson_all"] == pytest.approx(r.mean())
    record = scored.uns["stmorph"]["evaluate"]["manual"]
    assert set(record["heg"]) == set(heg) and set(record["hvg"]) == set(hvg)
    assert record["summary"]["pearson_MG"] == pytest.approx(row["pearson_MG"])


def test_hit_at_t_is_the_fraction_of_spots_sharing_a_top_gene(scored):
    table = st.tl.evaluate(scored, "predicted_manual", hit_at_t=(1, 3), inplace=False)
    st.tl.evaluate(scored, "predicted_manual", hit_at_t=(1, 3))
    truth, pred = scored.X, scored.layers["predicted_manual"]
    for t in (1, 3):
        hits = [bool(set(np.argsort(p)[-t:]) & set(np.argsort(x)[-t:])) for p, x in zip(pred, truth)]
        assert table.loc["manual", f"hit@{t}"] == pytest.approx(np.mean(hits))
        assert scored.uns["stmorph"]["evaluate"]["manual"]["hit_at"][str(t)] == pytest.approx(np.mean(hits))


def test_within_slice_prediction_is_scored_on_test_spots_in_its_training_representation(sim_table):
    adata = sim_table
    adata.layers["counts"] = adata.X.copy()
    adata.layers["log1p"] = np.log1p(adata.X.toarray())
    adata.X = np.zeros(adata.shape)  # must not be used: the model learns layers["log1p"]
    st.tl.predict(adata, method="ridge", use_rep="latent", layer="log1p", split=0.25)
    st.tl.evaluate(adata, "predicted_ridge", n_top=10)
    test = (adata.obs["stmorph_split"] == "test").to_numpy()
    expected = _scipy_pearson(adata.layers["log1p"][test], adata.layers["predicted_ridge"][test])
    np.testing.assert_allclose(adata.var["pearson_ridge"], expected, rtol=1e-5)
    record = adata.uns["stmorph"]["evaluate"]["ridge"]
    assert record["truth"] == "log1p" and record["subset"] == "test" and record["n_spots"] == test.sum()
    assert record["summary"]["pearson_HVG-10"] > 0.5  # the planted genes are the most variable ones
    # an explicit subset overrides the split
    st.tl.evaluate(adata, "predicted_ridge", subset="all", key_added="all_spots")
    assert adata.uns["stmorph"]["evaluate"]["all_spots"]["n_spots"] == adata.n_obs


def test_genes_without_prediction_and_constant_genes_give_nan_not_a_crash(scored):
    scored.layers["predicted_manual"][:, 2] = np.nan  # not predicted
    scored.X[:, 4] = 1.0  # constant truth
    st.tl.evaluate(scored, "predicted_manual", n_top=3)
    assert np.isnan(scored.var.loc["g2", ["pearson_manual", "rmse_manual"]]).all()
    assert np.isnan(scored.var.loc["g4", "pearson_manual"]) and np.isfinite(scored.var.loc["g4", "rmse_manual"])
    record = scored.uns["stmorph"]["evaluate"]["manual"]
    assert record["n_genes"] == 11 and np.isfinite(record["summary"]["pearson_all"])


def test_inplace_false_returns_the_summary_table_and_writes_nothing(scored):
    before = scored.copy()
    table = st.tl.evaluate(scored, "predicted_manual", n_top=3, key_added="m", inplace=False)
    assert_adata_equal(scored, before)
    assert table.index.tolist() == ["m"] and table.index.name == "prediction"
    r = _scipy_pearson(scored.X, scored.layers["predicted_manual"])
    assert table.loc["m", "pearson_all"] == pytest.approx(r.mean())
    assert {"pearson_MG", "pearson_HEG-3", "pearson_HVG-3", "rmse_all", "ssim_all", "hit@1"} <= set(table.columns)
    assert st.tl.evaluate(scored, "predicted_manual", n_top=3, key_added="m") is None
    stored = scored.uns["stmorph"]["evaluate"]["m"]["summary"]
    assert stored == pytest.approx(table.loc["m"].to_dict(), nan_ok=True)  # pearson_MG: NaN without markers
    np.testing.assert_allclose(scored.var["pearson_m"], r, rtol=1e-6)


def test_rank_layer_chooses_heg_on_another_representation(scored):
    st.tl.evaluate(scored, "predicted_manual", truth_layer="scaled", rank_layer="X", n_top=3)
    record = scored.uns["stmorph"]["evaluate"]["manual"]
    assert record["truth"] == "scaled"
    assert list(record["heg"]) == list(pd.Series(scored.X.mean(0), index=scored.var_names).nlargest(3).index)


def test_results_survive_h5ad_roundtrip(scored, tmp_path):
    st.tl.evaluate(scored, "predicted_manual", n_top=3)
    scored.write_h5ad(tmp_path / "eval.h5ad")
    back = ad.read_h5ad(tmp_path / "eval.h5ad")
    pd.testing.assert_frame_equal(back.var, scored.var)
    assert back.uns["stmorph"]["evaluate"]["manual"]["summary"]["pearson_all"] == pytest.approx(
        scored.uns["stmorph"]["evaluate"]["manual"]["summary"]["pearson_all"]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(layer="predicted_none"), StmorphKeyError, "predicted_none"),
        (dict(truth_layer="log1p"), StmorphKeyError, "log1p"),
        (dict(genes=["g1", "nope"]), StmorphKeyError, "nope"),
        (dict(marker_genes=["nope"]), StmorphKeyError, "marker"),
        (dict(n_top=0), InvalidParameterError, "n_top"),
        (dict(hit_at_t=(13,)), InvalidParameterError, "hit_at_t"),
        (dict(subset="train"), InvalidParameterError, "subset"),
        (dict(subset=["s1", "zz"]), StmorphKeyError, "zz"),
        (dict(subset=np.ones(5, dtype=bool)), ValueError, "n_obs"),
    ],
)
def test_bad_input_raises_clear_error_and_leaves_adata_unchanged(scored, kwargs, error, match):
    kwargs = {"layer": "predicted_manual", **kwargs}
    before = scored.copy()
    with pytest.raises(error, match=match):
        st.tl.evaluate(scored, **kwargs)
    assert_adata_equal(scored, before)


def test_nan_in_truth_is_rejected(scored):
    scored.X[0, 0] = np.nan
    before = scored.copy()
    with pytest.raises(NonFiniteError, match=r"adata\.X"):
        st.tl.evaluate(scored, "predicted_manual")
    assert_adata_equal(scored, before)
