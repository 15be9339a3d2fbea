"""Trust in a prediction: out-of-fold predictions, expected accuracy per gene, EPS beside it, trusted genes."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
from _adata_compare import assert_adata_equal
from scipy.stats import kstest, spearmanr
from sklearn.linear_model import Ridge as SkRidge

import stmorph as st
from stmorph._validation import InvalidParameterError, StmorphKeyError
from stmorph.models._baselines import Ridge
from stmorph.models._cv import cross_predict, cross_validate, fold_scores
from stmorph.tl._trust import reference_eps, stouffer


def _grouped_linear(n_groups=3, n=40, d=8, n_genes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_groups * n, d))
    y = x @ rng.normal(size=(d, n_genes)) + rng.normal(size=(n_groups * n, n_genes))
    return x, y, np.repeat(np.arange(n_groups), n)


def test_cross_predict_predicts_each_group_with_a_model_fitted_without_it():
    x, y, groups = _grouped_linear()
    oof, fold_of = cross_predict(lambda: Ridge(alpha=3.0), x, y, groups)
    assert oof.dtype == np.float32 and oof.shape == y.shape
    np.testing.assert_array_equal(fold_of, groups)
    for g in range(3):
        held = groups == g
        expected = SkRidge(alpha=3.0).fit(x[~held], y[~held]).predict(x[held])
        np.testing.assert_allclose(oof[held], expected, rtol=1e-4, atol=1e-4)


def test_cross_predict_gives_a_cv_model_the_remaining_groups_as_inner_folds():
    x, y, groups = _grouped_linear(n_groups=4)
    seen = []

    class Spy(Ridge):
        def fit(self, X, Y, groups=None):
            seen.append(np.unique(groups).tolist())
            return super().fit(X, Y, groups=groups)

    cross_predict(lambda: Spy(alpha="cv"), x, y, groups)
    assert seen == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


def test_cross_validate_returns_the_out_of_fold_predictions_it_scored():
    x, y, groups = _grouped_linear()
    table, preds = cross_validate(
        [lambda: Ridge(alpha=1.0), lambda: Ridge(alpha=100.0)], ["a", "b"], x, y, groups, return_predictions=True
    )
    assert set(preds) == {"a", "b"}
    for label in ("a", "b"):
        rows = table["candidate"] == label
        expected = [fold_scores(y[groups == g], preds[label][groups == g])[0] for g in range(3)]
        np.testing.assert_allclose(table["pearson_hvg50"][rows], expected)


def _sections(n_sections=4, n_spots=150, n_genes=40, n_planted=8, seed=0, shuffle=False):
    """Sections cut from one simulated slice (one image→gene mapping); log1p expression in X."""
    adata = st.datasets.simulate(n_sections * n_spots, n_genes, n_planted=n_planted, random_state=seed).tables["table"]
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    out = [adata[i * n_spots : (i + 1) * n_spots].copy() for i in range(n_sections)]
    if shuffle:  # expression permuted against the images in every reference
        rng = np.random.default_rng(seed)
        for part in out[:-1]:
            part.X = part.X[rng.permutation(part.n_obs)]
    return out[:-1], out[-1]


@pytest.mark.usefixtures("fast_auto")
@pytest.mark.parametrize("method", ["knn", "ridge", "auto"])
def test_planted_genes_get_a_higher_expected_r_than_unplanted_ones(method):
    refs, query = _sections()
    st.tl.predict(query, refs, method=method, use_rep="latent", key_added="p", progress=False)
    expected = query.var["p_expected_r"].to_numpy()
    planted = query.var_names.str.startswith("planted")
    assert expected[planted].min() > expected[~planted].max()
    assert query.var["p_trusted"][planted].all() and query.var["p_trusted"][~planted].mean() <= 0.1
    sd = query.var["p_expected_r_sd"].to_numpy()
    assert np.all(np.isfinite(sd)) and np.all(sd >= 0)


def test_shuffled_references_trust_almost_no_gene():
    refs, query = _sections(n_genes=400, n_planted=40, shuffle=True)
    st.tl.predict(query, refs, method="ridge", use_rep="latent", key_added="p", progress=False)
    assert query.var["p_trusted"].mean() <= 0.005
    assert abs(np.nanmean(query.var["p_expected_r"])) < 0.05


def test_stouffer_combination_is_uniform_under_the_null_and_powerful_for_a_shared_signal():
    rng = np.random.default_rng(0)
    combined = stouffer(rng.uniform(size=(20000, 3)))
    assert kstest(combined, "uniform").pvalue > 0.01
    assert abs(np.mean(combined < 0.05) - 0.05) < 0.005
    shared = np.full((1, 3), 0.03)  # each section alone is weak evidence; together they are strong
    assert stouffer(shared)[0] < 0.005


def test_reference_eps_qvalues_are_calibrated_on_shuffled_sections():
    refs, _ = _sections(n_genes=300, n_planted=0, shuffle=True)
    xs = [r.obsm["latent"] for r in refs]
    ys = [r.X.toarray() if hasattr(r.X, "toarray") else r.X for r in refs]
    eps, qval = reference_eps(xs, ys, 300)
    assert np.mean(qval < 0.05) <= 0.01 and np.isfinite(eps).all()


def test_within_a_slice_expected_r_is_the_test_spots_pearson():
    adata = st.datasets.simulate(200, 20, n_planted=4).tables["table"]
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    st.tl.predict(adata, method="ridge", use_rep="latent", split=0.3, key_added="p", progress=False)
    test = (adata.obs["stmorph_split"] == "test").to_numpy()
    truth = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    achieved = [np.corrcoef(truth[test, g], adata.layers["p"][test, g])[0, 1] for g in range(20)]
    np.testing.assert_allclose(adata.var["p_expected_r"], achieved, rtol=1e-4)


@pytest.mark.parametrize("value", [1.5, -2, float("nan"), "high"])
def test_min_expected_r_outside_minus_one_to_one_raises_and_writes_nothing(value):
    refs, query = _sections(n_genes=20, n_planted=4)
    before = query.copy()
    with pytest.raises(InvalidParameterError, match="min_expected_r"):
        st.tl.predict(query, refs, method="knn", use_rep="latent", min_expected_r=value, progress=False)
    assert_adata_equal(query, before)


def test_trust_false_writes_no_trust_column():
    refs, query = _sections(n_genes=20, n_planted=4)
    st.tl.predict(query, refs, method="knn", use_rep="latent", key_added="p", trust=False, progress=False)
    assert not any(c.startswith("p_") for c in query.var.columns)


def test_evaluate_scores_the_expected_r_against_the_achieved_r():
    refs, query = _sections(n_genes=60, n_planted=10)
    st.tl.predict(query, refs, method="ridge", use_rep="latent", progress=False)
    st.tl.evaluate(query, "predicted_ridge", n_top=10)
    expected, achieved = query.var["predicted_ridge_expected_r"], query.var["pearson_ridge"]
    summary = query.uns["stmorph"]["evaluate"]["ridge"]["summary"]
    assert summary["expected_r_spearman"] == pytest.approx(spearmanr(expected, achieved)[0])
    assert summary["expected_r_mae_all"] == pytest.approx(np.mean(np.abs(expected - achieved)))
    hvg = query.uns["stmorph"]["evaluate"]["ridge"]["hvg"]
    assert summary["expected_r_mae_HVG-10"] == pytest.approx(np.mean(np.abs(expected - achieved)[hvg]))
    assert summary["expected_r_spearman"] > 0.5  # planted genes are foretold


def test_trust_plot_marks_the_trusted_genes_in_each_view():
    refs, query = _sections(n_genes=30, n_planted=6)
    st.tl.predict(query, refs, method="ridge", use_rep="latent", progress=False)
    st.tl.evaluate(query, "predicted_ridge", n_top=5)
    fig = st.pl.trust(query, "predicted_ridge", show=False)
    assert [ax.get_ylabel() for ax in fig.axes] == ["achieved r", "EPS (mean over references)"]
    n_trusted = int(query.var["predicted_ridge_trusted"].sum())
    assert all(len(ax.collections[1].get_offsets()) == n_trusted for ax in fig.axes)
    with pytest.raises(StmorphKeyError, match=r"st\.tl\.predict"):
        st.pl.trust(refs[0], "predicted_ridge", show=False)
