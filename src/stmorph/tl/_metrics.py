"""Prediction metrics as small pure functions on ``(n_spots, n_genes)`` arrays.

Per-gene metrics (one value per column) follow the papers the predictions are compared with:
Pearson, Spearman and RMSE (EPS paper, BLEEP), SSIM as defined in HECLIP's code (per-gene
max-scaled vectors), and Hit@T per spot (HECLIP). Constant columns give NaN correlations and
SSIM instead of raising. Pearson r, the constant-column rule and the top-gene ranking live in
:mod:`stmorph._scores`, shared with the cross-validation in ``models/``.
"""

from __future__ import annotations

import numpy as np

from .._scores import as_pair, constant_columns, pearson, top_n

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per column (Pearson of average ranks, as :func:`scipy.stats.spearmanr`).

    Examples
    --------
    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 9.0])).round(4)
    array([0.8])
    """
    y_true, y_pred = as_pair(y_true, y_pred)
    from scipy.stats import rankdata  # imported here: scipy.stats takes ~0.5 s to import

    return pearson(rankdata(y_true, axis=0), rankdata(y_pred, axis=0))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Root mean squared error per column, in the units of the inputs.

    Examples
    --------
    >>> rmse(np.array([0.0, 0.0]), np.array([3.0, 4.0])).round(4)
    array([3.5355])
    """
    y_true, y_pred = as_pair(y_true, y_pred)
    return np.sqrt(((y_true - y_pred) ** 2).mean(0))


def ssim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Structural similarity per gene, as HECLIP computes it (code/GenesMetrics.py, from SpatialBenchmarking).

    Each column of ``y_true`` and of ``y_pred`` is divided by its own maximum; with ``M`` the smaller
    of the two scaled maxima (HECLIP's indexing picks the smaller one; it is 1 whenever both
    maxima are positive), ``C1 = (0.01 M)^2``, ``C2 = (0.03 M)^2``, ``C3 = C2 / 2`` and population
    moments ``μ``, ``σ``, ``σ_12``::

        SSIM = (2 μ1 μ2 + C1) / (μ1² + μ2² + C1) · (2 σ1 σ2 + C2) / (σ1² + σ2² + C2) · (σ12 + C3) / (σ1 σ2 + C3)

    Returns
    -------
    ``(n_genes,)`` float64; NaN where a column is constant or its maximum is 0 (max-scaling is undefined).

    Examples
    --------
    >>> ssim(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 4.0]))
    array([1.])
    """
    y_true, y_pred = as_pair(y_true, y_pred)
    max_t, max_p = y_true.max(0), y_pred.max(0)
    bad = constant_columns(y_true) | constant_columns(y_pred) | (max_t == 0) | (max_p == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = y_true / max_t
        b = y_pred / max_p
        m = np.minimum(a.max(0), b.max(0))
        c1, c2 = (_SSIM_K1 * m) ** 2, (_SSIM_K2 * m) ** 2
        c3 = c2 / 2
        mu1, mu2 = a.mean(0), b.mean(0)
        s1, s2 = a.std(0), b.std(0)
        s12 = ((a - mu1) * (b - mu2)).mean(0)
        value = (
            (2 * mu1 * mu2 + c1)
            / (mu1**2 + mu2**2 + c1)
            * (2 * s1 * s2 + c2)
            / (s1**2 + s2**2 + c2)
            * (s12 + c3)
            / (s1 * s2 + c3)
        )
    value[bad] = np.nan
    return value


def hit_at(y_true: np.ndarray, y_pred: np.ndarray, t: int) -> np.ndarray:
    """Hit@T per spot (HECLIP): does the top-``t`` gene set of the prediction share a gene with the truth's?

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` arrays.
    t
        Size of the top sets (1 ≤ t ≤ n_genes).

    Returns
    -------
    ``(n_spots,)`` bool; HECLIP's Hit@T is its mean. Tied values enter the top set in gene order
    (:func:`stmorph._scores.top_n`; the default, unstable ``np.argsort`` of HECLIP's code leaves
    their order unspecified).

    Examples
    --------
    >>> hit_at(np.array([[1.0, 5.0, 2.0], [3.0, 1.0, 2.0]]), np.array([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]]), 1)
    array([ True, False])
    """
    y_true, y_pred = as_pair(y_true, y_pred)
    if not 1 <= t <= y_true.shape[1]:
        raise ValueError(f"t must lie in [1, n_genes={y_true.shape[1]}]; found {t}")
    top_true = top_n(y_true, t)
    top_pred = top_n(y_pred, t)
    return (top_pred[:, :, None] == top_true[:, None, :]).any(axis=(1, 2))
