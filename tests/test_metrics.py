"""The per-gene and per-spot metric functions against hand-computed values, scipy and HECLIP's own loops."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stmorph.tl._metrics import hit_at, pearson, rmse, spearman, ssim


@pytest.fixture
def pair():
    """Tie-free continuous truth and a noisy prediction: 40 spots × 7 genes."""
    rng = np.random.default_rng(3)
    truth = rng.gamma(2.0, 1.0, size=(40, 7))
    return truth, truth + rng.normal(0, 1.0, size=truth.shape)


def _heclip_ssim(raw: np.ndarray, impute: np.ndarray) -> np.ndarray:
    """HECLIP's code/GenesMetrics.py ``count.ssim`` loop, re-typed: per column max-scaling, then cal_ssim."""
    raw_df, imp_df = pd.DataFrame(raw), pd.DataFrame(impute)
    raw_df, imp_df = raw_df / raw_df.max(), imp_df / imp_df.max()
    out = []
    for label in raw_df.columns:
        a, b = raw_df[label].to_numpy(), imp_df[label].to_numpy()
        m = [a.max(), b.max()][int(a.max() > b.max())]
        mu1, mu2 = a.mean(), b.mean()
        s1, s2 = np.sqrt(((a - mu1) ** 2).mean()), np.sqrt(((b - mu2) ** 2).mean())
        s12 = ((a - mu1) * (b - mu2)).mean()
        c1, c2 = (0.01 * m) ** 2, (0.03 * m) ** 2
        c3 = c2 / 2
        out.append(
            (2 * mu1 * mu2 + c1)
            / (mu1**2 + mu2**2 + c1)
            * (2 * s1 * s2 + c2)
            / (s1**2 + s2**2 + c2)
            * (s12 + c3)
            / (s1 * s2 + c3)
        )
    return np.array(out)


def _heclip_hit_at_k(pred: np.ndarray, true: np.ndarray, k: int) -> float:
    """HECLIP's code/infer.py ``Hit_at_k``, re-typed with Python sets."""
    pred_top = np.argsort(pred, axis=1)[:, -k:]
    true_top = np.argsort(true, axis=1)[:, -k:]
    return float(np.mean([bool(set(p) & set(t)) for p, t in zip(pred_top, true_top)]))


def test_metrics_match_hand_computed_tiny_case():
    # Pearson: deviations (-1, 0, 1) and (-7/3, -1/3, 8/3): r = 5 / sqrt(2 * 114/9)
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))[0] == pytest.approx(5 / np.sqrt(228 / 9))
    # Spearman: ranks (1,2,3,4) vs (1,3,2,4): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 9.0]))[0] == pytest.approx(0.8)
    # RMSE: sqrt((9 + 16) / 2)
    assert rmse(np.array([0.0, 0.0]), np.array([3.0, 4.0]))[0] == pytest.approx(np.sqrt(12.5))
    # SSIM of (0, 1) vs (1, 0): μ = 0.5, σ = 0.5, σ12 = -0.25, C2 = 9e-4, C3 = 4.5e-4 → (-0.25 + C3) / (0.25 + C3)
    assert ssim(np.array([0.0, 1.0]), np.array([1.0, 0.0]))[0] == pytest.approx((-0.25 + 4.5e-4) / (0.25 + 4.5e-4))
    # SSIM is 1 for vectors equal up to a positive scale (both are max-scaled first)
    assert ssim(np.array([1.0, 2.0, 4.0]), np.array([2.0, 4.0, 8.0]))[0] == pytest.approx(1.0)
    # Hit@1: spot 0 top genes (1 vs 1) agree, spot 1 (0 vs 2) do not; Hit@2 spot 1: {0, 2} vs {1, 2} share gene 2
    truth = np.array([[1.0, 5.0, 2.0], [3.0, 1.0, 2.0]])
    pred = np.array([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    assert hit_at(truth, pred, 1).tolist() == [True, False]
    assert hit_at(truth, pred, 2).tolist() == [True, True]


def test_correlations_match_scipy_per_gene(pair):
    truth, pred = pair
    expected_r = [stats.pearsonr(truth[:, g], pred[:, g])[0] for g in range(truth.shape[1])]
    np.testing.assert_allclose(pearson(truth, pred), expected_r, rtol=1e-10)
    ties_t, ties_p = np.round(truth), np.round(pred)  # ties: average ranks as scipy
    expected_rho = [stats.spearmanr(ties_t[:, g], ties_p[:, g])[0] for g in range(truth.shape[1])]
    np.testing.assert_allclose(spearman(ties_t, ties_p), expected_rho, rtol=1e-10)


def test_rmse_matches_numpy_per_gene(pair):
    truth, pred = pair
    expected = [np.sqrt(np.mean((truth[:, g] - pred[:, g]) ** 2)) for g in range(truth.shape[1])]
    np.testing.assert_allclose(rmse(truth, pred), expected, rtol=1e-12)


def test_ssim_matches_heclip_loop(pair):
    truth, pred = pair
    np.testing.assert_allclose(ssim(truth, pred), _heclip_ssim(truth, pred), rtol=1e-10)


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_hit_at_matches_heclip_loop(pair, t):
    truth, pred = pair
    assert hit_at(truth, pred, t).mean() == pytest.approx(_heclip_hit_at_k(pred, truth, t))


def test_constant_gene_gives_nan_without_warnings(pair):
    truth, pred = pair
    truth, pred = truth.copy(), pred.copy()
    truth[:, 1] = 0.0  # constant (zero) truth
    pred[:, 2] = 0.3  # constant prediction
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = {fn.__name__: fn(truth, pred) for fn in (pearson, spearman, ssim)}
        errors = rmse(truth, pred)
    for name, vals in values.items():
        assert np.isnan(vals[[1, 2]]).all(), name
        assert np.isfinite(np.delete(vals, [1, 2])).all(), name
    assert np.isfinite(errors).all()


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        pearson(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="t must lie"):
        hit_at(np.zeros((4, 2)), np.zeros((4, 2)), 3)
