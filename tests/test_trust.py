"""Trust in a prediction: out-of-fold predictions, expected accuracy per gene, EPS beside it, trusted genes."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge as SkRidge

from stmorph.models._baselines import Ridge
from stmorph.models._cv import cross_predict, cross_validate, fold_scores


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
