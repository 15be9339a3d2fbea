"""How far to trust a prediction, per gene: expected held-out accuracy, the references' EPS, and a trusted flag.

Everything here reads the out-of-fold predictions of the chosen method on the references
(:func:`stmorph.models._cv.cross_predict`: each reference section predicted by the model fitted
on the others, or spatial blocks of one section) and never the query's expression.

- **Expected r.** Each gene's Pearson r on every held-out fold is noisy (a section of ~200 spots
  gives r a standard error near 0.07), and the model fitted on all references is a little
  better than the fold models. So the fold r's are not averaged as they are: a linear
  calibration, fitted on the references only, predicts a fold's r from what is known without
  it — the mean r of the other folds, the spread of the prediction on the held-out fold relative
  to the gene's spread in the training folds, and the gene's detection rate — and is then
  applied with every fold's r (its slope on the mean r raised for a mean of one fold more:
  :func:`_more_folds`) and the spread of the prediction on the query. Measured on
  HER2ST leave-one-section-out (``benchmarks/bench_trust.py``, ``docs/methods/trust.md``).
- **EPS.** EPS of each gene on each reference's own image graph (the same representation), with
  the randomization p-values of :func:`stmorph.tl.eps`, combined over references by Stouffer's
  z (sections are disjoint sets of spots, so under the null their p-values are independent),
  then Benjamini–Hochberg over genes.
- **Trusted.** Expected r at least ``min_expected_r`` (default :data:`MIN_EXPECTED_R`, chosen by
  cross-validation over the references) and EPS q below :data:`EPS_ALPHA`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._keys import Key
from .._validation import check_range
from ._eps import bh_qvalues, compute_eps
from ._graph import knn_graph

MIN_EXPECTED_R = 0.15
"""Default ``min_expected_r``: the smallest value (grid step 0.025) at which, on the references' own held-out
folds, at least 85 % of the genes with that expected r reach r ≥ 0.1 (knn on HER2ST, each of the four
leave-one-section-out reference sets gave 0.15; ``docs/methods/trust.md``)."""
EPS_ALPHA = 0.05
"""A trusted gene's EPS q-value is below this."""
EPS_NEIGHBORS = 5
"""Neighbours of each reference's image graph (the EPS paper's k)."""


@dataclass
class Trust:
    """Per-gene trust of one prediction (arrays over the predicted genes; NaN where undefined)."""

    expected_r: np.ndarray
    expected_r_sd: np.ndarray
    eps: np.ndarray | None = None
    eps_qval: np.ndarray | None = None

    def trusted(self, min_expected_r: float) -> np.ndarray | None:
        """Genes with expected r ≥ ``min_expected_r`` and EPS q < :data:`EPS_ALPHA` (``None`` without EPS)."""
        if self.eps_qval is None:
            return None
        with np.errstate(invalid="ignore"):
            return (self.expected_r >= min_expected_r) & (self.eps_qval < EPS_ALPHA)

    def columns(self, key: str, min_expected_r: float) -> dict[str, np.ndarray]:
        """``var`` columns ``{key}_expected_r``, ``_expected_r_sd``; with EPS ``_eps``, ``_eps_qval``, ``_trusted``."""
        out = {"expected_r": self.expected_r, "expected_r_sd": self.expected_r_sd}
        if self.eps is not None:
            out.update(eps=self.eps, eps_qval=self.eps_qval, trusted=self.trusted(min_expected_r))
        return {Key.var.trust(key, name): values for name, values in out.items()}


def check_min_expected_r(value: float) -> None:
    """Raise :class:`~stmorph.errors.InvalidParameterError` unless ``value`` is a correlation in [−1, 1]."""
    check_range(value, "min_expected_r", low=-1.0, high=1.0, inclusive=True)


def column_pearson(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r of every column of ``truth`` with the same column of ``pred`` (NaN for a constant column).

    Examples
    --------
    >>> column_pearson(np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]), np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0]]))
    array([0.98198051,        nan])
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    t, p = t - t.mean(axis=0), p - p.mean(axis=0)
    denom = np.sqrt((t**2).sum(axis=0) * (p**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (t * p).sum(axis=0) / denom, np.nan)


def _quiet(stat, values: np.ndarray) -> np.ndarray:
    """``stat(values, axis=1)`` of a NaN-aware numpy statistic, NaN for all-NaN rows without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stat(values, axis=1)


def _spread_ratio(pred: np.ndarray, y_train: np.ndarray) -> np.ndarray:
    """SD of each gene's prediction over spots relative to its SD in the training expression."""
    sd = y_train.std(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, pred.std(axis=0, dtype=np.float64) / sd, 0.0)


def _features(fold_r: np.ndarray, spread: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Calibration inputs per gene: mean fold r (NaN folds skipped), prediction spread ratio, detection rate."""
    mean_r = _quiet(np.nanmean, fold_r)
    return np.nan_to_num(np.column_stack([np.ones(len(mean_r)), mean_r, spread, detected]))


def expected_r(
    oof: np.ndarray, y: np.ndarray, folds: np.ndarray, query_pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's expected Pearson r on a new section, and the spread of its r over the folds.

    Parameters
    ----------
    oof
        ``(n, g)`` out-of-fold predictions of the training spots.
    y
        ``(n, g)`` their expression.
    folds
        ``(n,)`` fold label of each spot (at least two folds).
    query_pred
        ``(m, g)`` the prediction of the query by the model fitted on every training spot.

    Returns
    -------
    ``expected_r`` (clipped to [−1, 1]) and ``expected_r_sd`` (SD of the fold r's), each ``(g,)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.normal(size=(300, 1))
    >>> y = np.hstack([signal + 0.5 * rng.normal(size=(300, 1)), rng.normal(size=(300, 1))])
    >>> oof = np.hstack([signal, rng.normal(size=(300, 1))])
    >>> r, sd = expected_r(oof, y, np.repeat([0, 1, 2], 100), oof[:100])
    >>> bool(r[0] > 0.6 > abs(r[1]))
    True
    """
    labels = np.unique(folds)
    fold_r = np.column_stack([column_pearson(y[folds == f], oof[folds == f]) for f in labels])
    detected = np.column_stack([(y[folds == f] > y.min(axis=0)).mean(axis=0) for f in labels])
    rows, targets = [], []
    for j, f in enumerate(labels):
        others = np.arange(len(labels)) != j
        spread = _spread_ratio(oof[folds == f], y[folds != f])
        rows.append(_features(fold_r[:, others], spread, detected[:, others].mean(axis=1)))
        targets.append(fold_r[:, j])
    design, target = np.vstack(rows), np.concatenate(targets)
    keep = np.isfinite(target)
    coef = _more_folds(np.linalg.lstsq(design[keep], target[keep], rcond=None)[0], design[keep, 1], len(labels))
    query = _features(fold_r, _spread_ratio(query_pred, y), detected.mean(axis=1))
    sd = _quiet(np.nanstd, fold_r)
    undefined = np.all(~np.isfinite(fold_r), axis=1)
    return np.where(undefined, np.nan, np.clip(query @ coef, -1.0, 1.0)), sd


def _more_folds(coef: np.ndarray, mean_r: np.ndarray, n_folds: int) -> np.ndarray:
    """The calibration refitted for a mean over ``n_folds`` fold r's instead of the ``n_folds - 1`` it was fitted on.

    A mean of noisy fold r's is shrunk by its reliability ``b = S / (S + N / (k - 1))`` (signal and
    noise variance across genes). The same ``S / N`` with one fold more gives
    ``b' = 1 / (1 + (1/b - 1)(k - 1)/k)``; the intercept keeps the prediction at the mean fold r.

    Examples
    --------
    >>> _more_folds(np.array([0.0, 0.5, 0.0, 0.0]), np.array([0.1, 0.3]), 3)
    array([-0.02,  0.6 ,  0.  ,  0.  ])
    """
    b = coef[1]
    if not 0 < b < 1:
        return coef
    adjusted = 1 / (1 + (1 / b - 1) * (n_folds - 1) / n_folds)
    out = coef.copy()
    out[1] = adjusted
    out[0] -= (adjusted - b) * mean_r.mean()
    return out


def stouffer(pvals: np.ndarray) -> np.ndarray:
    """One-sided p-values combined per row by Stouffer's z (equal weights; NaN entries skipped, all-NaN → NaN).

    Valid when the p-values of a row are independent under the null, as those of disjoint
    sections are; more powerful than the Cauchy combination for a signal shared by the sections.

    Examples
    --------
    >>> stouffer(np.array([[0.5, 0.5], [0.05, 0.05], [np.nan, 0.2]])).round(4)
    array([0.5 , 0.01, 0.2 ])
    """
    from scipy.stats import norm

    pvals = np.asarray(pvals, dtype=np.float64)
    z = norm.isf(np.clip(pvals, 1e-300, 1.0))
    n = np.isfinite(z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, norm.sf(np.nansum(z, axis=1) / np.sqrt(n)), np.nan)


def reference_eps(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], n_genes: int, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean EPS over references and the BH q-value of their Stouffer-combined p-values, per gene.

    Each reference gets its own image graph (:func:`~stmorph.tl._graph.knn_graph` of its inputs,
    ``EPS_NEIGHBORS`` neighbours) and :func:`~stmorph.tl._eps.compute_eps` with the randomization null.
    """
    eps, pvals = [], []
    genes = pd.RangeIndex(n_genes)
    for x, y in zip(xs, ys):
        graph, _, _ = knn_graph(np.asarray(x, dtype=np.float32), EPS_NEIGHBORS, random_state=random_state)
        result = compute_eps(graph, y, genes)
        eps.append(result.eps)
        pvals.append(result.pval)
    return _quiet(np.nanmean, np.column_stack(eps)), bh_qvalues(stouffer(np.column_stack(pvals)))


def expected_vs_achieved(expected: np.ndarray, achieved: np.ndarray, hvg: np.ndarray, n_top: int) -> dict[str, float]:
    """How well the expected r foretold the achieved r: Spearman over the genes, mean absolute error (all, HVG).

    Examples
    --------
    >>> out = expected_vs_achieved(np.array([0.1, 0.2, 0.3]), np.array([0.0, 0.3, 0.5]), np.array([2]), 1)
    >>> {k: round(v, 3) for k, v in out.items()}
    {'expected_r_spearman': 1.0, 'expected_r_mae_all': 0.133, 'expected_r_mae_HVG-1': 0.2}
    """
    from scipy.stats import spearmanr

    error = np.abs(np.asarray(expected, dtype=np.float64) - achieved)
    ok = np.isfinite(error)
    rho = float(spearmanr(expected[ok], achieved[ok])[0]) if ok.sum() > 2 else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "expected_r_spearman": rho,
            "expected_r_mae_all": float(np.nanmean(error)),
            f"expected_r_mae_HVG-{n_top}": float(np.nanmean(error[hvg])),
        }
